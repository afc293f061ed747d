# The README's two commands: `make demo` and `make test`. Each builds the
# virtual environment it needs (pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,ray,train,runtime]'
	touch $(STAMP)

# Train and evaluate end to end on a generated dataset, print the mAP report.
demo: $(STAMP)
	$(PY) tools/demo.py --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output

# Benchmarks (need ../shared; several hours on 2 cores the first time, R-CNN mode
# dominating; caches and stage checkpoints make reruns fast): see docs/benchmarks.md
# (headline figures) and docs/benchmarks_log.md (the experiment log).
bench: $(STAMP)
	$(PY) -m bench.voc_eval --runs 5
	OMP_NUM_THREADS=1 $(PY) -m bench.pooling --runs 7
	$(PY) -m bench.detection run
	$(PY) -m bench.head_swap --seeds 0
	$(PY) -m bench.fp_types
	$(PY) -m bench.detection speed --images 10
	$(PY) -m bench.detection report
	$(PY) -m bench.speed
	$(PY) -m bench.voc_scale all --sizes 500 1000 2000 --test 200 --iterations 1000 data.flip=false
	$(PY) -m bench.voc_scale all --sizes 500 2000 --test 200 --iterations 1000 --tag _flip
	$(PY) -m bench.ray_overhead --model runs/voc_like/train2000/model.pt
	$(PY) -m bench.voc_scale report

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
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Train and evaluate end to end on a generated dataset, print the mAP report.
demo: $(STAMP)
	$(PY) tools/demo.py --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output

# Benchmarks (need ../shared; several hours on 2 cores the first time, R-CNN mode
# dominating; caches and stage checkpoints make reruns fast): see docs/benchmarks.md.
bench: $(STAMP)
	$(PY) bench/bench_voc_eval.py --runs 5
	OMP_NUM_THREADS=1 $(PY) bench/bench_pooling.py --runs 7
	$(PY) bench/bench_detection.py run
	$(PY) bench/bench_head_swap.py --seeds 0
	$(PY) bench/bench_fp_types.py
	$(PY) bench/bench_detection.py speed --images 10
	$(PY) bench/bench_detection.py report

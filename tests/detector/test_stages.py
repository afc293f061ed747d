"""detector/training/stages.py with the stages of detector/training/train.py: keys, reuse, pooling, what changed."""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from detector.config import load_detector_config
from detector.features.pyramid import FeatureGrid
from detector.training.stages import Checkpoint, StageConfig, describe_changes, key_sections, run_stages
from detector.training.train import borrowed_values, stage_sections, training_settings, training_stages
from detector.training.context import shared_parts, stage_parts

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Checkpoint digests on the stub inputs of `checkpoint_names`. The bank sampler's
# digests (with bbox.max_per_image=64, the shipped small configs' settings) are those the
# hand-wired train() of commit 2851bfc (before the stages were declared) gave: its boolean
# rules copied verbatim onto a TrainingContext holding those inputs, and main's before
# issue 29; equal digests mean an existing workdir reuses that stage. A changed config
# default changes them on purpose (every workdir then recomputes that stage); record the
# new ones then. Issue 29's new fields are keyed only off their old behaviour: the svm
# section holds max_negatives_per_class only when bounded (the old byte budget never bound
# on the small sets), bbox.normal_equations_max_mb never (how, not what). Its new defaults
# (the streamed sampler, every regression window) are new keys.
BANK = ["finetune.sampler=bank", "bbox.max_per_image=64"]
OLD_DIGESTS = {
    "frozen": (BANK, {"finetune": "7a070aee5a402da2", "svm": "28b0956e44062b24", "bbox": "36f15f118c7cac51"}),
    "frozen_pool5": (BANK + ["svm.feature=pool5"],
                     {"finetune": "7a070aee5a402da2", "svm": "0b824c1c1243beac", "bbox": "36f15f118c7cac51"}),
    "conv": (BANK + ["finetune.conv_layers=1"],
             {"finetune": "1a61ddaab358a66e", "svm": "8ac4dbfcb386ad22", "bbox": "723065c8a2a8ba36"}),
    "conv_pool5": (BANK + ["finetune.conv_layers=1", "svm.feature=pool5"],
                   {"finetune": "1a61ddaab358a66e", "svm": "a3bee8a8c8e0791e", "bbox": "723065c8a2a8ba36"}),
    "rcnn": (BANK + ["mode=rcnn"],
             {"finetune": "505d0cc91d92e2d3", "svm": "9e1242c7d83a5bcd", "bbox": "bf737161b7e2f85d"}),
    "no_finetune": (["finetune.enabled=false", "bbox.max_per_image=64"],
                    {"svm": "6d7fd5d32686a7d2", "bbox": "36f15f118c7cac51"}),
    "no_finetune_pool5": (["finetune.enabled=false", "svm.feature=pool5", "bbox.max_per_image=64"],
                          {"svm": "0b824c1c1243beac", "bbox": "36f15f118c7cac51"}),
    "no_bbox": (BANK + ["bbox.enabled=false"], {"finetune": "7a070aee5a402da2", "svm": "28b0956e44062b24"}),
    "budgets": (BANK + ["finetune.bank_max_mb=1"],
                {"finetune": "5df824bfe71a84a7", "svm": "26cef9e4e5512a07", "bbox": "36f15f118c7cac51"}),
    "seed1_scales": (BANK + ["seed=1", "features.scales=[480,688]"],
                     {"finetune": "d2cf17217ab69e63", "svm": "d42390f70b73e527", "bbox": "31239eaf36efc77d"}),
    "stream": ([], {"finetune": "d6cb06c6194593f0", "svm": "39ffdfb9a55b0d03", "bbox": "f52297d232985ea3"}),
    "stream_conv": (["finetune.conv_layers=1"],
                    {"finetune": "06a49e694acbeffc", "svm": "c95623d928246b86", "bbox": "a761b9bd39c914b7"}),
    # The bank's budget, the prefetch depth and the normal equations' memory change
    # nothing the stream trains on.
    "stream_budgets_ignored": (["finetune.bank_max_mb=1", "finetune.prefetch=1", "bbox.normal_equations_max_mb=1"],
                               {"finetune": "d6cb06c6194593f0", "svm": "39ffdfb9a55b0d03",
                                "bbox": "f52297d232985ea3"}),
    "stream_images": (["finetune.images_per_batch=4"],
                      {"finetune": "69ab2bfae0dd4859", "svm": "0bfceb607da321c9", "bbox": "f52297d232985ea3"}),
    "bbox_cap": (["bbox.max_per_image=5"],
                 {"finetune": "d6cb06c6194593f0", "svm": "39ffdfb9a55b0d03", "bbox": "2bf9a6a515705a24"}),
    "svm_cap": (["svm.max_negatives_per_class=100"],
                {"finetune": "d6cb06c6194593f0", "svm": "753fe839c5d036bb", "bbox": "f52297d232985ea3"}),
}
# The shipped small-set configs' digests on the same stub inputs, computed with main's code
# before issue 29 was merged (5ad9685): the merge keeps every one of their stages.
SHIPPED_DIGESTS = {
    "bccd_mobilenet": {"finetune": "20d26c7ea8715309", "svm": "e52332a040d6281a", "bbox": "daf92e50f41aecec"},
    "bccd_mobilenet_conv": {"finetune": "2ad5ebb529ca22c3", "svm": "9e32bee82edb9d6c", "bbox": "a96ab48903beebd3"},
    "bccd_mobilenet_frozen": {"finetune": "db2acabac4fe0683", "svm": "1120934c1cc16eac", "bbox": "0c668f1e93934185"},
    "demo": {"finetune": "7d0d8166a7ed4747", "svm": "fb868d1af0fcb67b", "bbox": "0af133a9247e8203"},
    "raccoon_mobilenet": {"finetune": "9b0e41d76f1ed556", "svm": "702cf54a870256fc", "bbox": "0593ba9d40ec92a9"},
    "raccoon_mobilenet_frozen": {"finetune": "8fb23514df23ed29", "svm": "00cf1574819b3793",
                                 "bbox": "36f15f118c7cac51"},
}


def checkpoint_names(cfg) -> dict[str, str]:
    """Each checkpointed stage's file name, as TrainingContext.checkpoint derives it, on stub
    inputs: two classes, an image and its mirror, a trunk digest, 50 records of 4800-d pool5."""
    shared = shared_parts(training_settings(cfg), ["a", "b"], {"x": "d1", "x#flip": "d2"}, "b0",
                          FeatureGrid(stride=16, offset=7.5))
    stages, config = training_stages(cfg), stage_sections(cfg)
    sections = key_sections(stages)

    def parts(s):
        return stage_parts(shared, {n: config[n] for n in sections[s.name]}, cfg.data, 50, 4800, None,
                           borrowed_values(config, s.borrows))
    return {s.name: Checkpoint(Path("w"), s.name, parts(s)).path.name for s in stages if s.checkpointed}


@pytest.mark.parametrize("name", list(OLD_DIGESTS))
def test_stage_keys_are_the_hand_wired_trains(name):
    overrides, digests = OLD_DIGESTS[name]
    assert checkpoint_names(load_detector_config(None, overrides)) == {
        stage: f"{stage}-{digest}.pt" for stage, digest in digests.items()}


# Two shipped configs changed their training in issue 23, each measured anew: bccd_mobilenet.yaml
# trains on a 500 px search (proposals.train_max_side: 500), raccoon_mobilenet.yaml streams its
# fine-tuning windows (the code default) instead of the bank and warms its learning rate up over
# 100 iterations. With the changes undone each keeps the keys above (the fields alone change no
# stage key); as shipped, every stage is keyed anew, since every stage trains on other windows or
# another fine-tuned network.
AS_FIRST_MEASURED = {"bccd_mobilenet": ["proposals.train_max_side=-1"],
                     "raccoon_mobilenet": ["finetune.sampler=bank", "finetune.warmup_iterations=0"]}
ISSUE23_DIGESTS = {
    "bccd_mobilenet": {"finetune": "2d27b7090749d83c", "svm": "c3fe56380115a579", "bbox": "f90a6393f3c54f10"},
    "raccoon_mobilenet": {"finetune": "f4b558b8edceb5a0", "svm": "f460e647bad12bcd", "bbox": "43a1e125d9c0b24b"},
}
# raccoon_mobilenet.yaml streamed without warm-up (bench/results/raccoon_stream/, measured at 9371e1f)
RACCOON_STREAM_STEP_DIGESTS = {"finetune": "3f7ad43ecc6baedd", "svm": "b16ecdec5330684c", "bbox": "f82f6ae52fc0c1e5"}


@pytest.mark.parametrize("name", list(SHIPPED_DIGESTS))
def test_the_shipped_small_configs_keep_their_stage_keys(name):
    cfg = load_detector_config(CONFIGS / f"{name}.yaml", AS_FIRST_MEASURED.get(name, []))
    assert cfg.finetune.sampler == "bank" and cfg.bbox.max_per_image == 64  # as their mAP was measured
    assert checkpoint_names(cfg) == {stage: f"{stage}-{digest}.pt" for stage, digest in SHIPPED_DIGESTS[name].items()}


@pytest.mark.parametrize("name", list(ISSUE23_DIGESTS))
def test_a_changed_training_keys_every_stage(name):
    shipped = checkpoint_names(load_detector_config(CONFIGS / f"{name}.yaml", []))
    assert shipped == {stage: f"{stage}-{digest}.pt" for stage, digest in ISSUE23_DIGESTS[name].items()}
    assert not set(shipped.values()) & {f"{s}-{d}.pt" for s, d in SHIPPED_DIGESTS[name].items()}


def test_the_streamed_raccoon_run_without_warm_up_keeps_its_keys():
    cfg = load_detector_config(CONFIGS / "raccoon_mobilenet.yaml", ["finetune.warmup_iterations=0"])
    assert checkpoint_names(cfg) == {stage: f"{stage}-{d}.pt" for stage, d in RACCOON_STREAM_STEP_DIGESTS.items()}


def test_the_shipped_configs_are_all_pinned():
    small = {p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("voc2007_")}
    assert small == set(SHIPPED_DIGESTS)
    for path in CONFIGS.glob("voc2007_*.yaml"):  # the official, unbounded settings
        cfg = load_detector_config(path, [])
        assert (cfg.finetune.sampler, cfg.bbox.max_per_image, cfg.svm.max_negatives_per_class) == ("stream", 0, 0)


def test_the_fine_tuning_key_holds_its_samplers_fields_only():
    default = load_detector_config(None, [])
    shared = shared_parts(training_settings(default), ["a"], {"x": "d"}, "b0", FeatureGrid(stride=16, offset=7.5))
    stream = stage_parts(shared, {"finetune": default.finetune}, default.data, 50, 4800)["finetune"]
    assert stream["sampler"] == "stream" and stream["images_per_batch"] == 2
    assert not {"bank_fg_per_image", "bank_max_mb", "resample_every", "prefetch"} & set(stream)
    bank_cfg = load_detector_config(None, ["finetune.sampler=bank"])
    bank = stage_parts(shared, {"finetune": bank_cfg.finetune}, bank_cfg.data, 50, 4800)["finetune"]
    assert "sampler" not in bank and bank["bank_fg_per_image"] == 64
    stages = training_stages(load_detector_config(None, []))
    assert [s.name for s in stages] == ["proposals", "conv5_cache", "finetune", "svm", "bbox"]
    assert not any(s.pooled for s in stages)  # nothing pooled ahead: every stage streams


def test_a_stage_is_keyed_by_the_sections_upstream_of_what_it_reads():
    frozen = key_sections(training_stages(load_detector_config(None, [])))
    assert frozen["bbox"] == ("bbox",) and frozen["svm"] == ("finetune", "svm")  # fc7 reads the head
    conv = key_sections(training_stages(load_detector_config(None, ["finetune.conv_layers=2",
                                                                    "svm.feature=pool5"])))
    assert conv["bbox"] == ("finetune", "bbox") and conv["svm"] == ("finetune", "svm")  # the fine-tuned trunk
    plain = key_sections(training_stages(load_detector_config(None, ["finetune.enabled=false"])))
    assert plain["svm"] == ("svm",) and "finetune" not in plain


@dataclass
class RecordingHost:
    """A StageHost that records what the runner asks of it."""

    stages_dir: Path
    timings: dict = field(default_factory=dict)
    reused: list = field(default_factory=list)
    events: list = field(default_factory=list)

    def config_of(self, stage):
        return StageConfig(stage.name, {name: f"<{name}>" for name in stage.sections})

    def checkpoint(self, name, sections, borrows):
        return Checkpoint(self.stages_dir, name, {"sections": list(sections), "borrows": list(borrows)})

    def pool_windows(self, parts):
        self.events.append(("pool", sorted(parts)))

    def release_windows(self, parts):
        self.events.append(("release", sorted(parts)))


def recorded(stages):
    """The declared stages with bodies that only record that they ran or were restored."""
    def body(name):
        def run(host, config):
            host.events.append(("run", name))
            return {"stage": name}
        return run

    def restore(host, state):
        host.events.append(("restore", state["stage"]))
    return [dataclasses.replace(s, run=body(s.name), restore=restore if s.checkpointed else None) for s in stages]


def run_recorded(tmp_path, overrides):
    host = RecordingHost(tmp_path / "stages")
    run_stages(recorded(training_stages(load_detector_config(None, overrides))), host)
    return host


# Box regression streams its windows (issue 29): only the bank sampler's stage is pooled for.
BANK = ["finetune.sampler=bank"]


def test_windows_are_pooled_once_for_the_stages_that_compute_and_freed_after(tmp_path):
    host = run_recorded(tmp_path, BANK)
    assert host.events == [("run", "proposals"), ("run", "conv5_cache"), ("pool", ["finetune"]),
                           ("run", "finetune"), ("release", ["finetune"]), ("run", "svm"), ("run", "bbox")]
    assert set(host.timings) == {"proposals", "conv5_cache", "pool_training_windows", "finetune", "svm", "bbox"}
    again = run_recorded(tmp_path, BANK)  # every checkpoint there: restored, nothing pooled
    assert again.events == [("run", "proposals"), ("run", "conv5_cache"), ("restore", "finetune"),
                            ("restore", "svm"), ("restore", "bbox")]
    assert again.reused == ["finetune", "svm", "bbox"]
    for path in (tmp_path / "stages").glob("bbox-*.pt"):
        path.unlink()
    assert run_recorded(tmp_path, BANK).events[2:] == [("restore", "finetune"), ("restore", "svm"), ("run", "bbox")]
    streamed = run_recorded(tmp_path / "s", [])
    assert streamed.events == [("run", "proposals"), ("run", "conv5_cache"), ("run", "finetune"), ("run", "svm"),
                               ("run", "bbox")]


def test_conv_fine_tuning_pools_no_bank_and_caches_the_fine_tuned_trunk_first(tmp_path):
    host = run_recorded(tmp_path, BANK + ["finetune.conv_layers=1"])
    # No pre-trained conv5 cache: conv fine-tuning does not read it; the fine-tuned trunk's is the one.
    assert host.events == [("run", "proposals"), ("run", "finetune"),
                           ("run", "conv5_cache_finetuned"), ("run", "svm"), ("run", "bbox")]
    no_bbox = run_recorded(tmp_path / "b", BANK + ["bbox.enabled=false"])
    assert ("pool", ["finetune"]) in no_bbox.events


def test_describe_changes_names_what_moved():
    old = {"data": {"classes": ["a"], "images": {"x": "1", "y": "2"}}, "svm": {"C": 0.001, "neg_iou": 0.3},
           "seed": 0}
    new = {"data": {"classes": ["a"], "images": {"x": "1", "y": "3", "z": "4", "z#flip": "5"}},
           "svm": {"C": 0.01, "neg_iou": 0.3}, "seed": 1}
    text = describe_changes(old, new)
    assert "training data: 1 changed, 1 added image(s)" in text and "svm.C" in text and "seed" in text
    assert "neg_iou" not in text
    assert describe_changes(old, old) == "checkpoint missing"


# Each official rule off its default recomputes exactly the stages it changes; left at its
# default it changes no key (test_stage_keys_are_the_hand_wired_trains above).
ALL_STAGES = {"finetune", "svm", "bbox"}


@pytest.mark.parametrize("override, changed", [
    ("test.order=nms_then_regress", set()),                      # test time only
    ("svm.neg_iou_strict=true", {"svm"}),
    ("svm.neg_dedup=identical", {"svm"}),
    ("bbox.norm_windows=random", {"bbox"}),
    ("svm.norm_windows=random", {"svm"}),
    ("svm.target_norm=10", {"svm", "bbox"}),                     # box regression borrows it
    ("finetune.lr_steps=[100]", {"finetune", "svm"}),            # the SVMs read fc7
    ("finetune.lr_schedule=cosine", {"finetune", "svm"}),
    ("finetune.warmup_iterations=100", {"finetune", "svm"}),
    ("data.flip_stages=[finetune]", {"svm", "bbox"}),
    ("data.difficult_stages=[bbox]", {"bbox"}),
    ("data.difficult_stages=[finetune]", {"finetune", "svm"}),
    ("features.scale_rule=side", ALL_STAGES),                    # every pooled window
    ("pool.window_scaling=corner", ALL_STAGES),
])
def test_an_official_rule_keys_the_stages_it_changes(override, changed):
    base = checkpoint_names(load_detector_config(None, []))
    moved = checkpoint_names(load_detector_config(None, [override]))
    assert {stage for stage in base if base[stage] != moved[stage]} == changed


def test_a_stage_is_given_only_the_sections_it_declares():
    """Each stage reads its config from a StageConfig of its declared sections and borrowed
    fields: another section is an error naming the stage, so an undeclared (unkeyed) read
    cannot slip in."""
    from detector.training.train import BOX_REGRESSION, FINETUNE_STREAM, SVMS_ON_FC
    cfg = load_detector_config(None, ["svm.target_norm=7"])
    sections = stage_sections(cfg)
    bbox = StageConfig(BOX_REGRESSION.name, {n: sections[n] for n in BOX_REGRESSION.sections},
                       borrowed_values(sections, BOX_REGRESSION.borrows))
    assert bbox.bbox is cfg.bbox and bbox.svm.target_norm == 7
    with pytest.raises(AttributeError, match="svm.C|'C'"):
        bbox.svm.C  # only the borrowed field of that section
    with pytest.raises(AttributeError, match="training stage 'bbox' does not declare the config section 'finetune'"):
        bbox.finetune
    svm = StageConfig(SVMS_ON_FC.name, {n: sections[n] for n in SVMS_ON_FC.sections})
    assert svm.svm is cfg.svm
    with pytest.raises(AttributeError, match="'bbox'"):
        svm.bbox
    assert FINETUNE_STREAM.sections == ("finetune",)

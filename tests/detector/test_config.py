import pytest
from helpers import REPO

from detector.config import Config, load_detector_config
from detector.configio import ConfigError


def test_defaults_follow_the_paper():
    c = load_detector_config()
    assert c.pool.levels == [6, 3, 2, 1]
    assert c.features.scales == [688]
    assert c.test.nms_iou == 0.3 and c.test.max_per_class == 100 and c.test.max_per_image == 0
    with pytest.raises(ConfigError, match="max_per_class"):
        load_detector_config(None, ["test.max_per_class=-1"])
    assert (c.svm.C, c.svm.pos_weight, c.svm.bias_multiplier, c.svm.target_norm) == (0.001, 2.0, 10.0, 20.0)


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("features:\n  scales: [480, 576]\nsvm:\n  C: 0.01\n")
    c = load_detector_config(p, ["svm.C=0.1", "finetune.enabled=false", "backbone.weights=null"])
    assert c.features.scales == [480, 576]
    assert c.svm.C == 0.1 and c.finetune.enabled is False and c.backbone.weights is None


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("svm:\n  CC: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*svm.*CC"):
        load_detector_config(p)
    with pytest.raises(ConfigError, match="unknown key"):
        load_detector_config(None, ["nosuch.section=1"])


def test_type_errors_and_validation(tmp_path):
    with pytest.raises(ConfigError, match="expected a number"):
        load_detector_config(None, ["svm.C=abc"])
    with pytest.raises(ConfigError, match="backbone.name"):
        load_detector_config(None, ["backbone.name=lenet"])
    with pytest.raises(ConfigError, match="key=value"):
        load_detector_config(None, ["svm.C"])
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_detector_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_detector_config(tmp_path / "missing.yaml")


def test_repo_configs_load():
    root = REPO / "configs"
    files = sorted(root.glob("*.yaml"))
    for f in files:
        assert isinstance(load_detector_config(f), Config), f
    # configs/classify/: `sppnet classify` configs, another dataclass.
    from detector.classification.config import ClassifyConfig, load_classify_config
    classify = sorted((root / "classify").glob("*.yaml"))
    assert classify
    for f in classify:
        assert isinstance(load_classify_config(f), ClassifyConfig), f


def test_bccd_configs_differ_only_where_the_docs_say():
    """bccd_mobilenet_conv.yaml and bccd_mobilenet_frozen.yaml start from bccd_mobilenet.yaml (``_base_``)."""
    root = REPO / "configs"

    def load(name, *overrides):
        return load_detector_config(root / name, ["workdir=w", *overrides])

    base = load("bccd_mobilenet.yaml")
    assert base.features.scales == [874]
    assert (base.finetune.conv_layers, base.finetune.iterations) == (2, 1500)
    assert (base.proposals.max_side, base.proposals.train_max_side) == (0, 500)  # test at full resolution
    full = "proposals.train_max_side=-1"  # as the conv and frozen configs' mAPs were measured
    assert load("bccd_mobilenet_conv.yaml") == load("bccd_mobilenet.yaml", "finetune.iterations=3000", full)
    assert load("bccd_mobilenet_frozen.yaml") == load("bccd_mobilenet.yaml", "finetune.iterations=3000",
                                                      "finetune.conv_layers=0", full)
    # raccoon_mobilenet.yaml streams and warms up since issue 23; the frozen config keeps the bank
    # and the plain step schedule it was measured with
    assert (load("raccoon_mobilenet.yaml").finetune.sampler, load("raccoon_mobilenet.yaml").finetune.warmup_iterations) == \
        ("stream", 100)
    assert load("raccoon_mobilenet_frozen.yaml") == load("raccoon_mobilenet.yaml", "finetune.conv_layers=0",
                                                         "finetune.sampler=bank", "finetune.warmup_iterations=0")


def test_bccd_config_replays_every_svm_feature():
    """configs/bccd_mobilenet.yaml sets svm.replay_mb so the mining pass replays every record's
    fc features (BCCD trainval: 292 images and their mirrors, up to max_windows each, fc of
    finetune.hidden floats) instead of computing the part past the 2 GiB default again."""
    c = load_detector_config(REPO / "configs" / "bccd_mobilenet.yaml")
    records = 292 * (2 if c.data.flip and "svm" in c.data.flip_stages else 1)
    needed_mib = records * c.proposals.max_windows * c.finetune.hidden * 4 / 2**20
    assert c.svm.feature == "fc7" and c.svm.replay_mb >= needed_mib > load_detector_config().svm.replay_mb


def test_device_choice():
    import torch

    assert load_detector_config(None, ["device=cpu"]).torch_device() == torch.device("cpu")
    auto = load_detector_config().torch_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device"):
        load_detector_config(None, ["device=tpu"])


def test_split_search_gives_the_training_splits_the_training_search():
    c = load_detector_config(None, ["proposals.max_side=0", "proposals.train_max_side=500", "data.val_split=val"])
    assert c.split_search("trainval").max_side == c.split_search("val").max_side == 500
    assert c.split_search("test") is c.proposals and c.split_search("test").max_side == 0

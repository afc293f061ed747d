"""Classes that a split and a model do not share, through `sppnet train` / `test` / `evaluate`
(issue 25, items 3 and 4): a configured class with no training objects is named, once, and
listed in the training summary; a test split's classes that the model lacks are left out of
the evaluation and listed in metrics.json."""
import json
import re

from reliability_battery import remove_class, run_tool, split_ids, train_args, trained, voc


def _summary(text: str) -> dict:
    """The JSON summary `sppnet train` prints last."""
    return json.loads(text[text.rindex('{\n  "model"'):])


def test_train_names_a_class_without_training_objects(tmp_path):
    data = voc(tmp_path)
    assert remove_class(data, "trainval", "circle")
    args = train_args(data, tmp_path / "run", "data.class_names=[circle,square,triangle]")
    out = run_tool("train", *args)
    assert out.code == 0, out.text
    # Named, not indexed, and said once by each stage (not once per mining round).
    assert out.text.count("SVM class 'circle' (0) has no (non-difficult) positives") == 1, out.text
    assert out.text.count("box regression: class 'circle' (0) has no window") == 1, out.text
    assert not re.search(r"class \d", out.text), out.text
    assert "{'circle': 0, 'square':" in out.text  # the box regressors' windows per class
    expected = {"circle": ["finetune", "svm", "bbox"]}
    assert _summary(out.text)["classes_without_training_objects"] == expected
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["classes_without_training_objects"] == expected
    # A resumed run reuses every stage and still says it in its summary.
    again = run_tool("train", *args)
    assert again.code == 0 and sorted(_summary(again.text)["reused_stages"]) == ["bbox", "finetune", "svm"]
    assert _summary(again.text)["classes_without_training_objects"] == expected


def test_test_and_evaluate_score_the_model_classes_and_list_the_others(tmp_path):
    data, model = trained(tmp_path, without="circle")  # classes inferred from a split without circles
    report = json.loads((model.parent / "train_report.json").read_text())
    assert report["classes_without_training_objects"] == {}
    circles = sum((data / "Annotations" / f"{i}.xml").read_text().count("<name>circle</name>")
                  for i in split_ids(data, "test"))
    assert circles
    out = run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp_path / "t",
                   "--no-progress")
    assert out.code == 0, out.text
    assert out.text.count("not in the model") == 1, out.text
    assert f"{circles} object(s) of class(es) not in the model are left out: circle ({circles})" in out.text
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["not_in_model"] == {"circle": circles}
    assert set(metrics["AP"]) == {"square", "triangle"} and metrics["mAP"] > 0
    # `sppnet evaluate` with the model's classes reads the split the same way.
    out = run_tool("evaluate", "--data", data, "--split", "test", "--detections", tmp_path / "t" / "voc",
                   "--out", tmp_path / "e", "--classes", "square,triangle")
    assert out.code == 0, out.text
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["not_in_model"] == {"circle": circles} and again["mAP"] == metrics["mAP"]
    assert "not in the model (--classes) are left out: circle" in out.text

"""``sppnet export``: a model file -> an export folder (two ONNX graphs and a manifest).

- ``trunk.onnx``: the conv trunk, input ``image`` float32 [1, 3, H, W]
  (preprocessed, any H and W) -> ``conv5`` [1, C, h, w];
- ``head.onnx``: input ``pool5`` float32 [N, D] (any N, the pyramid's layout)
  -> ``scores`` [N, K] (the SVMs on fc7/fc6/pool5, or the softmax scorer's
  class probabilities) and ``deltas`` [N, K, 4] (every class's box
  regression, already de-standardised; zeros without regressors). With
  ``int8``, fc6 and fc7 are quantised by onnxruntime's dynamic quantisation
  (int8 weights, activations quantised per batch), the same idea as
  ``test.fc_compression=int8``; the SVMs and regressors stay float32.
- ``manifest.json`` (:mod:`detector.deploy.manifest`), written last.

The pyramid pooling is not in a graph: the runtime does it in numpy
(:mod:`detector.deploy.pyramid` says why not ONNX's MaxRoiPool: slower, though equal).
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..configio import to_dict
from ..fileio import atomic_path, write_json_atomic
from ..features.mapping import MAPPING_VERSION
from ..model import MODEL_FORMAT, MODEL_VERSION, ModelFileError, load_trained, read_model_file
from ..config import Config, without_retired_keys
from ..features.pool5 import SPPFeatures
from .manifest import MANIFEST, MAPPING_RULE, write_manifest_data

OPSET = 17
TRUNK_FILE = "trunk.onnx"
HEAD_FILE = "head.onnx"
# Side of the dummy image the trunk is traced with (any size works: H and W are dynamic).
TRACE_SIDE = 128


class ExportHead(nn.Module):
    """pool5 [N, D] -> (scores [N, K], deltas [N, K, 4]): the detector's fc layers,
    scorer and box regressors in one module, for export."""

    def __init__(self, detector):
        super().__init__()
        head = detector.head
        # Plain products (MatMul + Add rather than Gemm): onnxruntime's dynamic
        # quantisation quantises MatMul, and the int8 export names fc6/fc7 by these buffers.
        for name in ("fc6", "fc7", "cls_score"):
            layer = getattr(head, name)
            self.register_buffer(f"{name}_weight", layer.weight.detach().T.contiguous())
            self.register_buffer(f"{name}_bias", layer.bias.detach().clone())
        self.input_scale = float(head.input_scale)
        self.softmax = detector.test.scorer == "softmax"
        self.svm_feature = detector.svm_feature
        svms = detector.svms
        self.register_buffer("svm_weight", torch.from_numpy(svms.weights.T.copy()))  # [F, K]
        self.svm_scale = float(svms.feature_scale)
        self.register_buffer("svm_bias", torch.from_numpy(svms.bias.copy()))
        k = len(detector.class_names)
        regs = detector.regressors
        dim = head.fc6.in_features
        if regs is None:
            weight, bias = np.zeros((dim, 4 * k)), np.zeros(4 * k)
        else:  # deltas = ((x @ W_k) * s + b_k) * std_k + mean_k, folded into one [D, 4K] product
            std = regs.target_std.astype(np.float64)
            weight = (regs.weights.astype(np.float64) * regs.feature_scale * std[:, None, :])
            weight = weight.transpose(1, 0, 2).reshape(dim, 4 * k)
            bias = (regs.bias.astype(np.float64) * std + regs.target_mean).reshape(4 * k)
        self.register_buffer("reg_weight", torch.from_numpy(weight.astype(np.float32)))
        self.register_buffer("reg_bias", torch.from_numpy(bias.astype(np.float32)))
        self.num_classes = k

    def forward(self, pool5):
        fc6 = torch.relu(torch.matmul(pool5 * self.input_scale, self.fc6_weight) + self.fc6_bias)
        fc7 = torch.relu(torch.matmul(fc6, self.fc7_weight) + self.fc7_bias)
        if self.softmax:
            logits = torch.matmul(fc7, self.cls_score_weight) + self.cls_score_bias
            scores = torch.softmax(logits, dim=1)[:, 1:]
        else:
            feats = {"pool5": pool5, "fc6": fc6, "fc7": fc7}[self.svm_feature]
            scores = torch.matmul(feats, self.svm_weight) * self.svm_scale + self.svm_bias
        deltas = (torch.matmul(pool5, self.reg_weight) + self.reg_bias).reshape(-1, self.num_classes, 4)
        return scores, deltas


def export_model(model_path: str | os.PathLike, out_dir: str | os.PathLike, int8: bool = False) -> Path:
    """Write the export folder of the model file at ``model_path`` into ``out_dir``; returns the manifest's path.

    Raises:
        ModelFileError: the model file is unreadable, or was trained with another
            window-mapping rule than this code's (its export would not score as it trained).
        ValueError: an R-CNN mode model (its features are warped crops, not pooled conv5).
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    state, _ = read_model_file(model_path, MODEL_FORMAT, MODEL_VERSION, "an SPP-net model", Config,
                               without_retired_keys)
    trained_rule = state.get("mapping_version", 1)
    if trained_rule != MAPPING_VERSION:
        raise ModelFileError(f"{model_path}: trained with window-mapping rule {trained_rule}, this sppnet maps "
                             f"windows with rule {MAPPING_VERSION}: retrain it before exporting")
    del state
    # The exported head is the full-precision one; --int8 compresses it the ONNX way.
    model = load_trained(model_path, device="cpu", overrides=["test.fc_compression=none"])
    detector = model.detector
    if not isinstance(detector.features, SPPFeatures):
        raise ValueError(f"{model_path}: an R-CNN mode model (mode=rcnn) cannot be exported; "
                         "export runs SPP-net models")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # the folder is an export again only when all is written
    backbone = detector.backbone.cpu().eval()
    side = max(TRACE_SIDE, backbone.min_input_size)
    _export(backbone.trunk, torch.zeros(1, 3, side, side), out_dir / TRUNK_FILE, "image", ["conv5"],
            {"image": {2: "height", 3: "width"}, "conv5": {2: "map_height", 3: "map_width"}})
    head = ExportHead(detector).eval()
    dim = detector.head.fc6.in_features
    head_axes = {"pool5": {0: "windows"}, "scores": {0: "windows"}, "deltas": {0: "windows"}}
    if int8:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            fp32 = Path(tmp) / HEAD_FILE
            _export(head, torch.zeros(2, dim), fp32, "pool5", ["scores", "deltas"], head_axes)
            quantize_fc_layers(fp32, out_dir / HEAD_FILE)
    else:
        _export(head, torch.zeros(2, dim), out_dir / HEAD_FILE, "pool5", ["scores", "deltas"], head_axes)
    data = {
        "files": {"trunk": TRUNK_FILE, "head": HEAD_FILE},
        "class_names": list(detector.class_names),
        "head": {"precision": "int8" if int8 else "fp32", "scorer": detector.test.scorer,
                 "svm_feature": detector.svm_feature, "box_regression": detector.regressors is not None,
                 "input_dim": dim},
        "trunk": {"backbone": backbone.name, "channels": backbone.out_channels,
                  "min_input_size": backbone.min_input_size},
        "preprocess": to_dict(backbone.preprocess),
        "mapping": {"rule": MAPPING_RULE, "version": MAPPING_VERSION, "stride": backbone.grid.stride,
                    "offset": backbone.grid.offset},
        "config": to_dict(model.config),
        "exported_with": exporter_versions(),
        "source_model": str(model_path),
    }
    manifest = out_dir / MANIFEST
    write_json_atomic(manifest, write_manifest_data(out_dir, data))
    return manifest


def quantize_fc_layers(fp32: Path, out: Path) -> None:
    """onnxruntime's dynamic int8 quantisation of the fc6 and fc7 products of ``fp32`` into ``out``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32)).graph
    fc_nodes = [n.name for n in graph.node if n.op_type == "MatMul"
                and set(n.input) & {"fc6_weight", "fc7_weight"}]
    logging.disable(logging.WARNING)  # the quantiser's advice, logged on the root logger per tensor
    try:
        with atomic_path(out) as tmp:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, nodes_to_quantize=fc_nodes)
    finally:
        logging.disable(logging.NOTSET)


def exporter_versions() -> dict[str, str]:
    """The versions an export was made with (recorded in the manifest)."""
    import onnx
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    try:
        from importlib.metadata import version
        sppnet = version("sppnet")
    except Exception:  # noqa: BLE001 - run from a checkout without installing
        sppnet = "not installed (source checkout)"
    return {"sppnet": sppnet, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort_version,
            "opset": str(OPSET), "numpy": np.__version__, "python": sys.version.split()[0],
            "platform": platform.platform()}


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str],
            dynamic_axes: dict) -> None:
    """torch.onnx.export (the TorchScript exporter) of ``module`` to ``path``, atomically."""
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced shapes and deprecation
        torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=output_names, dynamic_axes=dynamic_axes)

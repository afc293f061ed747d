"""The torch-free detector: an export folder run with numpy, OpenCV and onnxruntime.

:class:`OnnxDetector` is :class:`detector.inference.detector.Detector`'s pipeline on an
export folder (``sppnet export``)::

    windows -> conv5 (trunk.onnx, per scale) -> pool5 (numpy pyramid)
            -> head.onnx (fc6, fc7, SVM scores, box deltas) -> decode, clip, NMS (numpy)

with the same rules from the same modules: selective search
(:mod:`proposals`), the input resize and preprocessing
(:mod:`detector.features.preprocess`), scale selection and window mapping
(:mod:`detector.features.mapping`), box decoding and NMS (:mod:`detector.box_arrays`).
It offers what :func:`detector.inference.folders.detect_files` uses of a detector
(``detect``, ``propose``, ``proposals``, ``class_names``,
``with_reserved_cores``), so ``sppnet detect`` runs either. Nothing here
imports torch (tests/tools/test_deploy.py runs it with torch made unimportable).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..box_arrays import batched_nms_array, clip_box_array, decode_box_array
from ..config import Config, FeatureConfig, PoolConfig, TestConfig, with_test_overrides, without_retired_keys
from ..configio import ConfigError, from_dict
from ..features.distinct import distinct_rows
from ..images import ImageTooSmallError, check_image_size
from ..features.mapping import FeatureGrid, map_windows_to_cells, scale_windows, select_scale_indices
from ..features.preprocess import resize_image, scale_factor
from ..records import Detections
from ..threads import limit_threads, network_threads
from ..timing import timed_stage
from .manifest import ExportFolderError, Manifest, read_manifest
from .pyramid import pool_pyramid

# Settings an export fixes (they are baked into head.onnx): a test-time override
# of them is an error rather than silently ignored.
FIXED_AT_EXPORT = ("scorer", "fc_compression", "svd_rank")


@dataclasses.dataclass(frozen=True)
class ConvMap:
    """conv5 of one image at one scale: float32 [C, h, w] and the resize factor."""

    features: np.ndarray
    factor: float


class OnnxDetector:
    """An exported SPP-net detector (see the module docstring). Build one with :func:`load_export`.

    It holds only what it runs, taken from the model's config (with the test-time
    overrides applied) by :func:`load_export`, the one reader of that config here.

    Args:
        manifest: the checked manifest of the folder.
        proposals: the search (``proposals`` section).
        test: the test-time rules (``test`` section).
        features: the scales and the scale rule (``features`` section).
        pool: the pyramid and the window rules (``pool`` section).
        reserved_cores: cores lent to work beside this detector (the proposal
            workers of a pipelined folder run); the graphs' threads come from the rest.
        sessions: onnxruntime sessions by thread count, shared by the copies
            :meth:`with_reserved_cores` makes.
    """

    def __init__(self, manifest: Manifest, proposals, test: TestConfig, features: FeatureConfig, pool: PoolConfig,
                 reserved_cores: int = 0, sessions: dict | None = None):
        self.manifest = manifest
        self.class_names = manifest.class_names
        self.proposals = proposals
        self.test = test
        self.features = features
        self.pool = pool
        self.reserved_cores = reserved_cores
        trunk = manifest.data["trunk"]
        self.grid = FeatureGrid(int(manifest.data["mapping"]["stride"]), float(manifest.data["mapping"]["offset"]))
        self.min_side = max(int(trunk["min_input_size"]), self.grid.stride)
        self.regress = bool(manifest.data["head"]["box_regression"])
        self._sessions = {} if sessions is None else sessions

    def with_reserved_cores(self, cores: int) -> "OnnxDetector":
        """The same detector leaving ``cores`` cores to work that runs beside it."""
        return OnnxDetector(self.manifest, self.proposals, self.test, self.features, self.pool, cores, self._sessions)

    def network_threads(self) -> int:
        """Threads for this image's graphs (decided per call, as the torch detector does)."""
        return network_threads(self.test.threads, self.reserved_cores)

    def propose(self, image: np.ndarray) -> np.ndarray:
        """Selective-search windows of an RGB uint8 image, float32 [N, 4]."""
        from proposals import propose_with_config
        return propose_with_config(image, self.proposals)

    def detect(self, image: np.ndarray, windows=None, name: str = "image",
               timings: dict | None = None) -> Detections:
        """Detect objects in an RGB uint8 image [H, W, 3]: :meth:`detector.inference.detector.Detector.detect`.

        ``timings`` gets seconds per stage: proposals, conv, pool, fc (head.onnx:
        fc layers, SVM scores and box deltas together), bbox, nms.
        """
        threads = self.network_threads()
        trunk, head = self._graphs(threads)
        with limit_threads(threads):  # OpenCV's resize
            if windows is None:
                with timed_stage(timings, "proposals"):
                    windows = self.propose(image)
            windows = np.asarray(windows, np.float32).reshape(-1, 4)
            with timed_stage(timings, "conv"):
                maps = self.conv_maps(image, trunk, name)
            with timed_stage(timings, "pool"):
                pooled = self.pool5(maps, windows, min(image.shape[:2]))
            with timed_stage(timings, "fc"):
                scores, deltas = self.score(head, pooled)
        height, width = image.shape[:2]
        return self.postprocess(windows, scores, deltas, width, height, timings)

    def score(self, head, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """head.onnx on each distinct pool5 row once (detector/features/distinct.py, as the torch
        detector does): scores [N, K] and box deltas [N, K, 4]."""
        if len(pooled) == 0:
            k = len(self.class_names)
            return np.zeros((0, k), np.float32), np.zeros((0, k, 4), np.float32)
        first, inverse = distinct_rows(pooled)
        scores, deltas = head.run(["scores", "deltas"], {"pool5": pooled[first]})
        return scores[inverse], deltas[inverse]

    def conv_maps(self, image: np.ndarray, trunk, name: str = "image") -> list[ConvMap]:
        """conv5 of the image at each of ``features.scales`` (trunk.onnx)."""
        check_image_size(image, self.min_side, name)
        height, width = image.shape[:2]
        features = self.features
        maps = []
        for scale in features.scales:
            factor = scale_factor(height, width, scale, features.max_size)
            resized = resize_image(image, factor)
            if min(resized.shape[:2]) < self.min_side:
                raise ImageTooSmallError(f"{name}: resized to {resized.shape[1]}x{resized.shape[0]} px at "
                                         f"scale {scale}, under the network's minimum side {self.min_side} px")
            x = self.manifest.preprocess.array(resized)[None]
            maps.append(ConvMap(trunk.run(["conv5"], {"image": x})[0][0], factor))
        return maps

    def pool5(self, maps: Sequence[ConvMap], windows: np.ndarray, min_side: int) -> np.ndarray:
        """pool5 [N, D] of windows [N, 4] (original pixels; ``min_side``: the image's shorter
        side): scale selection, window scaling, mapping and the pyramid, by the model's rules
        (features.scale_rule, pool.canonical_window, pool.window_scaling, pool.window_margin),
        as :func:`detector.features.pool5.pool_maps`."""
        pool, rule = self.pool, self.features.scale_rule
        channels = maps[0].features.shape[0]
        out = np.zeros((len(windows), channels * sum(n * n for n in pool.levels)), np.float32)
        if len(windows) == 0:
            return out
        chosen = (np.zeros(len(windows), np.int64) if len(maps) == 1
                  else select_scale_indices(windows, [m.factor for m in maps], pool.canonical_window, rule,
                                            min_side))
        for s, conv in enumerate(maps):
            sel = np.flatnonzero(chosen == s)
            if len(sel) == 0:
                continue
            _, h, w = conv.features.shape
            scaled = scale_windows(windows[sel], conv.factor, pool.window_scaling, min_side)
            cells = map_windows_to_cells(scaled, self.grid, h, w, pool.window_margin)
            out[sel] = pool_pyramid(conv.features, cells, pool.levels)
        return out

    def postprocess(self, windows: np.ndarray, scores: np.ndarray, deltas: np.ndarray, width: int,
                    height: int, timings: dict | None = None) -> Detections:
        """Threshold, regress, clip and NMS, regression before or after NMS as ``test.order``
        says: :meth:`detector.inference.detector.Detector.postprocess` in numpy."""
        test = self.test
        win_idx, labels = np.nonzero(scores > test.score_threshold)
        boxes, det_scores = windows[win_idx], scores[win_idx, labels]

        def regress(boxes, win_idx, labels):
            if self.regress and len(win_idx):
                boxes = decode_box_array(boxes, deltas[win_idx, labels])
            return clip_box_array(boxes, width, height)

        def nms(boxes, det_scores, labels):
            keep = batched_nms_array(boxes, det_scores, labels, test.nms_iou, test.max_per_class)
            return keep[: test.max_per_image or None]

        if test.order == "nms_then_regress":  # the official order: NMS on the windows, no second NMS
            with timed_stage(timings, "nms"):
                keep = nms(boxes, det_scores, labels)
            with timed_stage(timings, "bbox"):
                boxes = regress(boxes[keep], win_idx[keep], labels[keep])
        else:
            with timed_stage(timings, "bbox"):
                boxes = regress(boxes, win_idx, labels)
            with timed_stage(timings, "nms"):
                keep = nms(boxes, det_scores, labels)
            boxes = boxes[keep]
        return Detections(boxes.astype(np.float32), det_scores[keep].astype(np.float32),
                          labels[keep].astype(np.int64))

    def _graphs(self, threads: int):
        """(trunk, head) onnxruntime sessions with ``threads`` intra-op threads, made once per count."""
        if threads not in self._sessions:
            self._sessions[threads] = (open_session(self.manifest.path_of("trunk"), threads),
                                       open_session(self.manifest.path_of("head"), threads))
        return self._sessions[threads]


def open_session(path: Path, threads: int):
    """An onnxruntime CPU session of the graph at ``path``; a graph it cannot load is an
    ExportFolderError naming the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Threads that spin between ops take cores from everything else on a shared
    # machine (the same barrier problem as torch's, detector/threads.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for invalid or unsupported graphs
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ExportFolderError(f"{path}: onnxruntime cannot load it ({first[:200]})") from None


def load_export(folder: str | Path, overrides: list[str] | None = None) -> OnnxDetector:
    """The detector of an export folder, with test-time ``key=value`` overrides
    (the sections of :func:`detector.config.with_test_overrides`) applied.

    Raises:
        ExportFolderError: see :func:`detector.deploy.manifest.read_manifest`;
            an override of a setting baked into head.onnx.
        ConfigError: an unknown or non-test-time override key.
    """
    manifest = read_manifest(folder)
    where = f"{manifest.folder / 'manifest.json'}:config"
    try:
        stored = from_dict(Config, without_retired_keys(manifest.data["config"]), where)
    except ConfigError as e:
        raise ExportFolderError(str(e)) from None
    config = with_test_overrides(stored, overrides)
    changed = [k for k in FIXED_AT_EXPORT if getattr(config.test, k) != getattr(stored.test, k)]
    if changed:
        raise ExportFolderError(f"command line: test.{', test.'.join(changed)} cannot change on an export "
                                f"folder ({manifest.folder}): it is built into head.onnx; export the model "
                                "again with the setting you want (sppnet export --int8 for int8 fc layers)")
    return OnnxDetector(manifest, config.proposals, config.test, config.features, config.pool)

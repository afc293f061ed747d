"""Deploying a trained detector without torch: ONNX export and a numpy/onnxruntime runtime.

- :mod:`detector.deploy.export` (needs torch and onnx): ``sppnet export``
  writes ``trunk.onnx`` (image -> conv5, any height and width), ``head.onnx``
  (pool5 [N, D] -> SVM scores [N, K] and box deltas [N, K, 4]: fc6, fc7, the
  SVMs and the box regressors in one graph, any N) and ``manifest.json``.
- :mod:`detector.deploy.runtime` (needs numpy, OpenCV, onnxruntime, no torch):
  :class:`~detector.deploy.runtime.OnnxDetector`, the same pipeline as
  :class:`detector.inference.detector.Detector`: selective search, scale selection and
  window mapping (:mod:`detector.features.mapping`), pyramid pooling in numpy
  (:mod:`detector.deploy.pyramid`), the two graphs, box decoding and NMS
  (:mod:`detector.box_arrays`).
- :mod:`detector.deploy.manifest`: the manifest record, shared by both.
"""

"""Image classification with spatial pyramid pooling (SPP-net, Sec. 3): ``sppnet classify``.

``config`` (dataclasses), ``data`` (ImageFolder layout or detection-set crops),
``inputs`` (fixed-size warps or own-size buckets), ``model`` (trunk -> pyramid
-> fc, the model file), ``training`` (multi-size training, evaluation),
``report`` (report.json / report.md). The pyramid itself is
:class:`detector.features.spp.SpatialPyramidPool2d`.
"""

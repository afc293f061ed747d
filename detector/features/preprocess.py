"""The network's input, without torch: the preprocessing record and the resize to a scale.

Shared by the torch pipeline (:mod:`detector.features.backbones`, :mod:`detector.features.conv_maps`)
and the ONNX runtime (:mod:`detector.deploy`), so both feed the conv layers
the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Preprocess:
    """How to turn an RGB uint8 image into the network's input.

    ``out[c] = (image[channel_order][c] * scale - mean[c]) / std[c]``; ``mean``
    and ``std`` are in the output channel order and in scaled units.
    """
    channel_order: str  # "RGB" or "BGR"
    scale: float  # 1/255 (values in [0, 1]) or 1.0 (values 0-255)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"Preprocess.channel_order must be RGB or BGR, got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("Preprocess: mean and std need 3 values, std positive")

    def apply(self, image_rgb: np.ndarray):
        """RGB uint8 array [H, W, 3] -> float32 Tensor [3, H, W] (:meth:`array` as a tensor)."""
        import torch  # here: the torch-free runtime calls only array()

        return torch.from_numpy(self.array(image_rgb))

    def array(self, image_rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 array [H, W, 3] -> float32 array [3, H, W], C-contiguous."""
        if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            shape = getattr(image_rgb, "shape", None)
            raise ValueError(f"Preprocess.apply expects an RGB array [H, W, 3], got shape {shape}")
        if image_rgb.dtype != np.uint8:
            raise ValueError(f"Preprocess.apply expects uint8 pixels, got {image_rgb.dtype}")
        x = image_rgb.transpose(2, 0, 1).astype(np.float32)
        if self.channel_order == "BGR":
            x = x[::-1]
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        # float32 throughout, in this order: the scale is rounded to float32 like a torch scalar.
        return np.ascontiguousarray((x * np.float32(self.scale) - mean) / std)


PREPROCESS_PRESETS: dict[str, Preprocess] = {
    # torchvision ImageNet weights (torchvision.models docs).
    "imagenet": Preprocess("RGB", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe models: BGR 0-255 minus the ImageNet mean pixel (104, 117, 123), no std.
    "caffe": Preprocess("BGR", 1.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
    # The official SPP-net code's input (utils/caffe_anysize_test.m: BGR,
    # 0-255, minus 128 in every channel), what its ZF-5 weights were trained on.
    "caffe_bgr128": Preprocess("BGR", 1.0, (128.0, 128.0, 128.0), (1.0, 1.0, 1.0)),
    # TF/Inception-style: x / 127.5 - 1, i.e. [-1, 1].
    "inception": Preprocess("RGB", 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def scale_factor(height: int, width: int, scale: int, max_size: int) -> float:
    """Factor that makes the shorter side ``scale`` px, the longer at most ``max_size``."""
    factor = scale / min(height, width)
    if max(height, width) * factor > max_size:
        factor = max_size / max(height, width)
    return factor


def resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an RGB uint8 image [H, W, 3] by ``factor`` (bilinear; area when shrinking)."""
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)

"""A training image's left-right mirror (``data.flip``): same file, mirrored boxes, its own id."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..boxes import flip_boxes
from ..records import ImageRecord

# Image id suffix of a training image's left-right mirror.
FLIP_SUFFIX = "#flip"


def flipped_record(record: ImageRecord) -> ImageRecord:
    """The record of ``record``'s image mirrored left-right: same file, mirrored boxes."""
    boxes = flip_boxes(record.boxes, record.width).numpy().astype(np.float32)
    return dataclasses.replace(record, image_id=record.image_id + FLIP_SUFFIX, boxes=boxes)


def is_flipped(record) -> bool:
    return record.image_id.endswith(FLIP_SUFFIX)


def original_id(image_id: str) -> str:
    """The id of the image a mirror was made from (an original's own id)."""
    return image_id.removesuffix(FLIP_SUFFIX)

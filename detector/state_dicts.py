"""Round trips of array-holding records through torch state dicts.

Model files hold tensors and plain numbers only, so ``torch.load(...,
weights_only=True)`` reads them without unpickling code; the SVMs and the box
regressors convert their numpy arrays with these two functions.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


def to_state(obj, arrays: Sequence[str], numbers: Sequence[str] = ()) -> dict:
    """``obj``'s numpy attributes ``arrays`` as tensors and ``numbers`` as floats."""
    out = {name: torch.from_numpy(np.ascontiguousarray(getattr(obj, name))) for name in arrays}
    out.update({name: float(getattr(obj, name)) for name in numbers})
    return out


def from_state(state: Mapping, arrays: Mapping[str, type], numbers: Sequence[str], what: str) -> dict:
    """Keyword arguments rebuilt from :func:`to_state`'s output; a missing key is a ValueError."""
    missing = sorted((set(arrays) | set(numbers)) - set(state))
    if missing:
        raise ValueError(f"{what} state dict lacks {missing}")

    def array(value, dtype):
        return np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value, dtype)

    kwargs = {name: array(state[name], dtype) for name, dtype in arrays.items()}
    kwargs.update({name: float(state[name]) for name in numbers})
    return kwargs

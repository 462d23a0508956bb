"""Fingerprints of training data: shape, dtype and a hash of every byte.

A checkpoint records the fingerprint of the data it was trained on, so that resuming a run
on other data (another file, other patches or chips) is refused instead of silently mixing
two trainings. Used by the diffusion prior's and the segmenter's training loops.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

HASH_CHUNK_BYTES = 32 * 2**20
"""Bytes of rows hashed per task (a memmap is never read whole into memory)."""


def native_bytes(part: Any) -> np.ndarray:
    """The bytes of an array, tensor or number, contiguous and in native byte order."""
    if isinstance(part, Tensor):
        return part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    arr = np.ascontiguousarray(part)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr.reshape(-1).view(np.uint8)


def dtype_name(data: Tensor | np.ndarray) -> str:
    """``uint8``, ``float32``...: the same name for a tensor and an array of one dtype."""
    return str(data.dtype).removeprefix("torch.") if isinstance(data, Tensor) else data.dtype.name


def array_fingerprint(data: Tensor | np.ndarray) -> dict[str, Any]:
    """Shape, dtype and a blake2b hash of every byte of ``data`` (N, ...).

    Hashed in row chunks on a few threads (hashlib releases the GIL): a memmap is never read
    whole into memory, and 2 GB (100,000 x 5 x 64 x 64 uint8) take 1-2 s on two cores.
    """
    shape = [int(d) for d in data.shape]
    item = data.element_size() if isinstance(data, Tensor) else data.dtype.itemsize
    rows = max(1, HASH_CHUNK_BYTES // max(1, item * math.prod(shape[1:])))

    def chunk_digest(lo: int) -> bytes:
        return hashlib.blake2b(native_bytes(data[lo : lo + rows]), digest_size=16).digest()

    digest = hashlib.blake2b(repr((shape, dtype_name(data))).encode(), digest_size=16)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for part in pool.map(chunk_digest, range(0, shape[0], rows)):
            digest.update(part)
    return {"kind": "array", "shape": shape, "dtype": dtype_name(data),
            "blake2b": digest.hexdigest()}  # fmt: skip

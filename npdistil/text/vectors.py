"""What people do with sentence embeddings once they have them: compare them and shrink them,
as sentence-transformers' similarity functions and ``quantize_embeddings`` do.

Shape legend: N and M texts, E embedding width.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import InputError
from .sentence import SIMILARITY_FUNCTIONS, l2_normalize

__all__ = ["PRECISIONS", "quantize_embeddings", "similarity", "similarity_pairwise"]

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: str,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:  # [N, E] float -> [N, E] int8/uint8, or [N, ceil(E / 8)] packed bits
    """Embeddings in a smaller type, as sentence-transformers' ``quantize_embeddings``.

    ``int8``/``uint8``: each dimension's [min, max] (from ``ranges`` [2, E], else from
    ``calibration_embeddings``, else from the embeddings themselves, which needs at least two)
    cut into 255 steps. ``binary``/``ubinary``: one bit per dimension, set where the value is
    positive, packed 8 to a byte (``binary`` shifted by -128 into int8).

    >>> quantize_embeddings(np.array([[0.5, -1.0, 2.0]]), "ubinary")
    array([[160]], dtype=uint8)
    """
    embeddings = np.asarray(embeddings)
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if embeddings.dtype.kind != "f":
        raise InputError("embeddings to quantize must be floats")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if ranges is None:
            calibration = embeddings if calibration_embeddings is None else calibration_embeddings
            if calibration_embeddings is None and (calibration.ndim == 1 or len(calibration) < 2):
                raise InputError(
                    f"cannot compute {precision} ranges from a single embedding: encode more "
                    "texts at once, or call npdistil.quantize_embeddings with ranges= or "
                    "calibration_embeddings="
                )
            if calibration_embeddings is None and len(calibration) < 100:
                warnings.warn(
                    f"{precision} ranges computed from only {len(calibration)} embeddings; pass "
                    "ranges or calibration_embeddings from a representative set for stabler "
                    "buckets",
                    stacklevel=2,
                )
            ranges = np.vstack([calibration.min(axis=0), calibration.max(axis=0)])
        ranges = np.asarray(ranges).astype(np.float32, copy=False)
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        if precision == "uint8":
            return buckets.astype(np.uint8)
        return (buckets - 128).astype(np.int8)
    bits = np.packbits(embeddings > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)


def _as_batch(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    return a[None, :] if a.ndim == 1 else a


def similarity(a: Any, b: Any, fn: str = "cosine") -> np.ndarray:  # [N, E], [M, E] -> [N, M]
    """Every row of ``a`` against every row of ``b``: cosine, dot, or the negative euclidean or
    manhattan distance (higher is more similar), as sentence-transformers' similarity functions.

    >>> similarity([[1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0]])
    array([[1., 0.]], dtype=float32)
    """
    a, b = _as_batch(a), _as_batch(b)
    if fn == "cosine":
        return l2_normalize(a) @ l2_normalize(b).T
    if fn == "dot":
        return a @ b.T
    if fn in ("euclidean", "manhattan"):  # from the differences (a vector is 0 from itself)
        out = np.empty((len(a), len(b)), np.float32)
        step = max(1, (1 << 20) // max(1, b.size))  # rows of a per [rows, M, E] temporary
        for i in range(0, len(a), step):
            diff = a[i : i + step, None, :] - b[None, :, :]  # [rows, M, E]
            if fn == "euclidean":
                out[i : i + step] = -np.sqrt(np.einsum("rme,rme->rm", diff, diff))
            else:
                out[i : i + step] = -np.abs(diff).sum(-1)
        return out
    raise InputError(f"similarity function must be one of {SIMILARITY_FUNCTIONS}, got {fn!r}")


def similarity_pairwise(a: Any, b: Any, fn: str = "cosine") -> np.ndarray:  # -> [N]
    """``a[i]`` against ``b[i]`` for every i (same function as ``similarity``)."""
    a, b = _as_batch(a), _as_batch(b)
    if a.shape != b.shape:
        raise InputError(f"pairwise similarity needs equal shapes, got {a.shape} and {b.shape}")
    if fn == "cosine":
        return (l2_normalize(a) * l2_normalize(b)).sum(-1)
    if fn == "dot":
        return (a * b).sum(-1)
    if fn == "euclidean":
        return -np.sqrt(((a - b) ** 2).sum(-1))
    if fn == "manhattan":
        return -np.abs(a - b).sum(-1)
    raise InputError(f"similarity function must be one of {SIMILARITY_FUNCTIONS}, got {fn!r}")

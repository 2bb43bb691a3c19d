"""Small weights for small machines: npdistil files whose big matrices are int8 or float16.

Nine tenths of a model's bytes are in a few big matrices: the word embeddings and the four
linear layers of every block. ``dtype="int8"`` stores each as int8 values with one float32 scale
per output channel (symmetric: ``w ~= values * scale``, ``scale = max |w| / 127`` over the
channel), about a quarter of the float32 file; ``dtype="float16"`` stores them as float16,
about half. Everything else (biases, LayerNorms, positions, task heads) stays float32.

The forward pass widens one matrix at a time back to float32 just before it multiplies
(``numerics.dense``), so memory holds the small file (mapped) and one float32 matrix per thread,
never a float32 model; the products themselves are the same float32 BLAS products. An int8
file changes the numbers (about 3 significant digits per weight; ``benchmarks/`` measures the
agreement of sentence embeddings with float32); a float16 file changes them less.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import InputError
from .numerics import dense, widened
from .transformer import Weights

__all__ = ["DTYPES", "compressed_names", "compress", "float32_weights"]

DTYPES = ("float32", "float16", "int8")


def compressed_names(names: Mapping[str, object] | set[str]) -> list[str]:
    """The npdistil tensors a small-weights file stores small: the word embeddings, an untied
    masked-LM projector, and the weight of every block's linear layers."""
    linears = ("qkv", "out", "ffn_in", "ffn_out")
    return sorted(
        n
        for n in names
        if n in ("embeddings.word", "heads.mlm.projector.weight")
        or (n.startswith("blocks.") and n.endswith(tuple(f".{k}.weight" for k in linears)))
    )


def _channel_axis(name: str) -> int:
    """The axis the output channels run along: columns of [in, out] weights, rows of the
    [V, D] tables (each row is one token's vector)."""
    return 0 if name in ("embeddings.word", "heads.mlm.projector.weight") else 1


def quantize_int8(w: np.ndarray, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per channel: ``w ~= values * scale``.

    >>> values, scale = quantize_int8(np.array([[1.0, -0.5], [-2.0, 0.25]], np.float32), 1)
    >>> values.tolist(), [round(float(s), 5) for s in scale[0]]
    ([[64, -127], [-127, 64]], [0.01575, 0.00394])
    """
    reduce = 1 - channel_axis  # the other axis: within a channel
    peak = np.abs(w).max(axis=reduce, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
    values = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return values, scale


def compress(tensors: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """npdistil's float32 tensors with the big matrices stored as ``dtype``: int8 values under
    the tensor's own name and their scales under ``<name>.scale``, or float16."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    out = dict(tensors)
    if dtype == "float32":
        return out
    for name in compressed_names(tensors):
        w = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "float16":
            if np.abs(w).max(initial=0) > np.finfo(np.float16).max:
                raise InputError(f"tensor {name!r} has values beyond float16's range")
            out[name] = w.astype(np.float16)
        else:
            out[name], out[f"{name}.scale"] = quantize_int8(w, _channel_axis(name))
    return out


def float32_weights(weights: Weights) -> Weights:
    """The encoder's weights with every matrix as float32 (a whole float32 copy: for reading and
    teaching, not for the fast path, which widens one matrix at a time)."""
    emb = weights.embeddings
    return Weights(
        embeddings=emb._replace(word=dense(emb.word)),
        blocks=tuple(
            blk._replace(
                qkv=widened(blk.qkv),
                out=widened(blk.out),
                ffn_in=widened(blk.ffn_in),
                ffn_out=widened(blk.ffn_out),
            )
            for blk in weights.blocks
        ),
        relative_attention_bias=weights.relative_attention_bias,
    )

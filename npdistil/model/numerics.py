"""The numerical building blocks of the forward pass, each a function of float32 arrays.

`transformer.py` says *what* DistilBERT computes with these; this module says *how*, and is where
speed work belongs. Functions marked "in place" overwrite their first argument and return it:
the forward pass owns its activations, so reusing their memory saves allocations.

Where the time goes: the matrix products take 70-80% of the time, near BLAS's peak. The rest
is elementwise work over big activations -- bias adds, GELU over [N, F], layer norms, the
softmax over [B, H, T, T] -- at one NumPy operation per pass through memory. So the helpers
below take cache-sized chunks of rows through all their operations at once, with chunk-sized
temporaries (big ones cost page faults as well as bandwidth), GELU uses an approximation with
few operations, and exp is computed as exp2. Spreading the work over cores is ``kernels.py``'s.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import mmap
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from .kernels import one_blas_thread

__all__ = [
    "Int8Array",
    "Matrix",
    "dense",
    "embedding_rows",
    "widened",
    "Linear",
    "LayerNorm",
    "Segments",
    "linear",
    "layer_norm",
    "gelu",
    "relu",
    "attention",
]

FLOAT = np.float32

# Elementwise work is done on chunks of about this many floats (1 MB): big enough that NumPy's
# per-call overhead is small, small enough that a chunk and its temporaries stay in cache.
_CHUNK = 256 * 1024


class Int8Array(NamedTuple):
    """A float32 matrix stored small: int8 ``values`` times a float32 ``scale`` per output
    channel ([in, out] weights: one per column; embedding tables [V, D]: one per row).
    ``dense`` widens it back; files written with ``dtype="int8"`` hold these (quantize.py)."""

    values: np.ndarray  # [rows, cols] int8
    scale: np.ndarray  # [1, cols] or [rows, 1] float32, broadcast over values

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def T(self) -> Int8Array:  # noqa: N802  (as ndarray.T)
        return Int8Array(self.values.T, self.scale.T)


# A weight matrix: float32, or stored small (int8 with scales, or float16) and widened on use.
Matrix = np.ndarray | Int8Array


def dense(w: Matrix) -> np.ndarray:  # [rows, cols] -> float32 [rows, cols]
    """A weight matrix as float32: itself, or widened from a small-weights file (a new array;
    the forward pass widens one matrix at a time, so a whole float32 model never exists)."""
    if isinstance(w, Int8Array):
        out = np.empty(w.values.shape, FLOAT)
        np.copyto(out, w.values)
        out *= w.scale
        return out
    if w.dtype == FLOAT:
        return w
    return _widen_float16(w)


# float16 -> float32 by moving bits: NumPy converts float16 one element at a time (~1.7 ns
# each here, 4 ms per [768, 3072] matrix); these four passes of integer and float operations
# take a quarter of that. A float16's sign, exponent and fraction, shifted into float32's
# fields, make the same number divided by 2^112 (the exponent biases are 15 and 127), exact for
# normal and subnormal values alike; infinities and NaNs (exponent all ones) are not, so any
# there are converted by NumPy. Equal bits to NumPy's conversion for all 65,536 float16 values
# (tested), unless the process flushes denormal inputs to zero, which some libraries turn on.
_HALF_FIELDS = np.int32(-0x70002000)  # 0x8FFFE000: the sign, then the 15 bits moved up
_HALF_SCALE = np.float32(2.0**112)


def _widen_float16(w: np.ndarray) -> np.ndarray:  # float16 [...] -> float32 [...], a new array
    bits = np.empty(w.shape, np.int32)
    np.copyto(bits, w.view(np.int16))  # sign-extended: a negative one also sets bits 16..31
    np.left_shift(bits, 13, out=bits)  # exponent and fraction (15 bits) -> bits 13..27
    np.bitwise_and(bits, _HALF_FIELDS, out=bits)  # keep the sign bit and bits 13..27
    out = bits.view(FLOAT)
    out *= _HALF_SCALE
    exponents = np.bitwise_and(w.view(np.uint16), 0x7C00)
    if exponents.size and exponents.max() == 0x7C00:  # infinities or NaNs
        special = exponents == 0x7C00
        out[special] = w[special]
    return out


def gather_rows(table: np.ndarray, ids: np.ndarray) -> np.ndarray:  # [V, D], [N] -> [N, D]
    """``table[ids]``, then, when ``table`` is mapped from a file, its pages are let go from
    this process (they stay in the OS page cache, for the next lookup).

    A lookup of a few thousand rows touches pages all over the 89 MB word-embedding table, and
    the kernel maps their neighbours too: without this, all of it would count in the process's
    resident memory for the rest of its life.
    """
    rows = table[ids]
    owner, root = _mapping_of(table)
    if owner is not None and hasattr(owner, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        start = table.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        first = start - start % mmap.PAGESIZE
        length = min(start + table.nbytes, len(owner)) - first
        with contextlib.suppress(OSError, ValueError):
            owner.madvise(mmap.MADV_DONTNEED, first, length)
    return rows


def _mapping_of(array: np.ndarray) -> tuple[mmap.mmap | None, np.ndarray]:
    """The mmap an array views, and the array over the whole mapping (None when not mapped)."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    owner = root.base.obj if isinstance(root.base, memoryview) else root.base
    return (owner if isinstance(owner, mmap.mmap) else None), root


def embedding_rows(table: Matrix, ids: np.ndarray) -> np.ndarray:  # [V, D], [n] -> [n, D]
    """``table[ids]`` in float32, whatever the table is stored as."""
    if isinstance(table, Int8Array):
        rows = gather_rows(table.values, ids).astype(FLOAT)
        rows *= table.scale[ids] if table.scale.shape[0] > 1 else table.scale
        return rows
    rows = gather_rows(table, ids)
    return rows if rows.dtype == FLOAT else rows.astype(FLOAT)


class Linear(NamedTuple):
    """An affine map ``y = x @ weight + bias``, weight stored [in, out] (transposed once, at
    conversion, from PyTorch's [out, in])."""

    weight: Matrix  # [in, out]
    bias: np.ndarray  # [out]


def widened(lin: Linear) -> Linear:
    """``lin`` with a float32 weight (see ``dense``)."""
    return (
        lin
        if isinstance(lin.weight, np.ndarray) and lin.weight.dtype == FLOAT
        else (Linear(dense(lin.weight), lin.bias))
    )


class LayerNorm(NamedTuple):
    """Per-feature scale and shift applied after normalising over the last axis."""

    weight: np.ndarray  # [D]
    bias: np.ndarray  # [D]


def _row_blocks(x: np.ndarray) -> Iterator[np.ndarray]:  # [..., W] -> views [rows, W]
    """The rows of ``x`` (all axes but the last flattened) in cache-sized blocks, as views."""
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    if x.size and not np.shares_memory(rows, x):
        raise ValueError("in-place helpers need a C-contiguous array")
    step = max(1, _CHUNK // max(rows.shape[1], 1))
    for i in range(0, rows.shape[0], step):
        yield rows[i : i + step]


# ---- linear layers ---------------------------------------------------------------------------


def linear(
    x: np.ndarray, lin: Linear, activation: str | None = None, out: np.ndarray | None = None
) -> np.ndarray:  # [..., in] -> [..., out]
    """``x @ weight + bias``, then ``activation`` ("gelu" or "relu") if given, in one pass
    over the output; written into ``out`` (C-contiguous) when given. = ``reference.linear``,
    then ``reference.gelu`` / ``reference.relu``. The product runs with BLAS held to one
    thread, as every npdistil product does (``kernels.one_blas_thread``)."""
    with one_blas_thread():  # a no-op inside a pass, which holds it already
        y = np.matmul(x, dense(lin.weight), out=out)
    for block in _row_blocks(y):
        block += lin.bias
        if activation == "gelu":
            _gelu_block(block)
        elif activation == "relu":
            np.maximum(block, 0, out=block)
    return y


# ---- activations -----------------------------------------------------------------------------

# HF "gelu" is the exact ``x Phi(x)``, Phi the normal CDF, ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``.
# NumPy has no erf (and SciPy is not a dependency), so Phi is computed from its logit:
#
#     Phi(x) = 1 / (1 + exp(-s(x))),   s(x) = log(Phi(x) / (1 - Phi(x))) ~= x P(x^2) / Q(x^2)
#
# s is odd and smooth (1.596 x near 0, x^2 / 2 far out). P cubic over Q monic quadratic is a
# weighted minimax fit on |x| <= 7, exact slope at 0, whose error in gelu is within
# 1.8e-7 before float32 rounding (about 2 float32 ulps after; tests/test_numerics.py prints the
# figures). That is 16 elementwise operations on chunk-sized temporaries; Abramowitz & Stegun
# 7.1.26, used before, took 24 over three full-size temporaries. Must equal reference.gelu.
_S_NUM = (504.37629924984583, 57.91269141201373, 3.1668468198116404, 0.03607352837023244)
_S_DEN = (316.0709731883525, 21.898468297941612)  # + x^4
# |x| is clamped here before the fit is used: s(10) > 58, so Phi is 0 or 1 to float32 precision,
# and nothing overflows for any finite input.
_S_CLAMP = 10.0


def _minus_logit_phi(
    x: np.ndarray, out: np.ndarray, tmp: np.ndarray, tmp2: np.ndarray, unit: float = 1.0
) -> None:
    """``out = -s(x) * unit`` (see above), using two scratch arrays shaped like ``x``."""
    xc, t = tmp, tmp2
    np.clip(x, -_S_CLAMP, _S_CLAMP, out=xc)
    np.multiply(xc, xc, out=t)  # t = x^2
    p0, p1, p2, p3 = (-c * unit for c in _S_NUM)
    np.multiply(t, p3, out=out)  # -P(t) * unit, by Horner
    out += p2
    out *= t
    out += p1
    out *= t
    out += p0
    out *= xc  # -x P(t) * unit
    q0, q1 = _S_DEN
    np.add(t, q1, out=xc)  # Q(t), monic
    xc *= t
    xc += q0
    out /= xc


# NumPy's exp2 is 2.5x faster than its exp (float32, AVX-512): exp(y) is computed as exp2(y / ln 2)
# wherever the 1 / ln 2 can be folded into constants computed anyway.
LOG2_E = 1 / math.log(2)


def _gelu_block(x: np.ndarray) -> None:  # in place, one cache-sized block
    e, tmp, tmp2 = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    _minus_logit_phi(x, e, tmp, tmp2, unit=LOG2_E)
    np.exp2(e, out=e)  # exp(-s(x))
    e += 1
    np.divide(x, e, out=x)  # x Phi(x) = x / (1 + exp(-s(x)))


def gelu(x: np.ndarray) -> np.ndarray:  # [...], in place
    """HF "gelu": the exact form ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, not tanh.

    >>> x = np.array([-1.0, 0.0, 1.5], np.float32)
    >>> [round(float(v), 6) for v in gelu(x)]
    [-0.158655, 0.0, 1.399789]
    """
    if not x.flags.c_contiguous:
        x[...] = gelu(np.ascontiguousarray(x))
        return x
    flat = x.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        _gelu_block(flat[i : i + _CHUNK])
    return x


def relu(x: np.ndarray) -> np.ndarray:  # [...], in place; = reference.relu
    return np.maximum(x, 0, out=x)


# ---- normalisation ---------------------------------------------------------------------------

# Row-wise dot products: one pass, no temporary (np.vecdot is NumPy >= 2; einsum is 2.5x slower).
_row_dots = getattr(np, "vecdot", None) or functools.partial(np.einsum, "ij,ij->i")


def layer_norm(
    x: np.ndarray, norm: LayerNorm, eps: float, *, residual: np.ndarray | None = None
) -> np.ndarray:  # [..., D], in place
    """LayerNorm over the last axis with the biased variance, as torch.nn.LayerNorm; with
    ``residual`` (same shape), of ``x + residual``: a post-LN block's ``LN(x + f(x))``.
    = ``reference.layer_norm(x + residual)``, in one pass over cache-sized blocks of rows."""
    if not x.flags.c_contiguous:
        x[...] = layer_norm(np.ascontiguousarray(x), norm, eps, residual=residual)
        return x
    res = None if residual is None else _row_blocks(np.ascontiguousarray(residual))
    d = x.shape[-1]
    for rows in _row_blocks(x):  # [rows, D]
        if res is not None:
            rows += next(res)
        mean = np.add.reduce(rows, axis=1, keepdims=True)
        mean *= 1 / d
        rows -= mean
        std = _row_dots(rows, rows)[:, None]  # [rows, 1]: D times the biased variance
        std *= 1 / d
        std += eps
        np.sqrt(std, out=std)
        rows /= std
        rows *= norm.weight
        rows += norm.bias
    return x


# ---- attention -------------------------------------------------------------------------------


class Segments(NamedTuple):
    """Where the sequences of a batch lie on the flat token axis [N] that every layer but
    attention works on, as runs of sequences of equal length placed back to back: a padded
    [B, T] batch is one run of B sequences of T tokens; a packed batch, one run per length."""

    runs: tuple[tuple[int, int, int], ...]  # (first token, number of sequences, length)
    # Per run, [n_seq, T] added to the scores of each key (0, or float32's minimum for
    # padding), or None where every key may be attended to.
    key_bias: tuple[np.ndarray | None, ...]
    # [H, T keys, T queries] added to the scores of every sequence, in base-2 units (times
    # log2 e): MPNet's relative position bias (transformer.relative_position_bias), made for
    # the longest sequence; a shorter one takes its top-left corner. None: no such term.
    position_bias: np.ndarray | None = None

    @classmethod
    def padded(cls, attention_mask: np.ndarray) -> Segments:  # [B, T] of 0 and 1
        """B sequences of T tokens; keys where the mask is 0 get float32's minimum, as in
        transformers and ``reference.encoder``'s ``mask_bias`` (the minimum, not -inf: a row
        with every key masked then gets a uniform softmax instead of NaN)."""
        b, t = attention_mask.shape
        padding = attention_mask == 0
        bias = np.where(padding, np.finfo(FLOAT).min, FLOAT(0)).astype(FLOAT)
        return cls(((0, b, t),), (bias if padding.any() else None,))

    def starts(self) -> np.ndarray:  # [n_seq]
        """The first token of every sequence."""
        firsts = [start + t * np.arange(n_seq) for start, n_seq, t in self.runs]
        return np.concatenate(firsts) if firsts else np.zeros(0, np.int64)

    def firsts_in(self, rows: slice) -> np.ndarray:  # [m]
        """The first tokens of the sequences that start within ``rows``."""
        starts = self.starts()
        return starts[(starts >= rows.start) & (starts < rows.stop)]

    @classmethod
    def packed(cls, lengths: Sequence[int]) -> Segments:
        """Sequences of these lengths back to back, no padding (a run per stretch of equal
        lengths: sort them to make runs long)."""
        runs, start = [], 0
        for length, same in itertools.groupby(int(n) for n in lengths):
            n_seq = len(list(same))
            runs.append((start, n_seq, length))
            start += n_seq * length
        return cls(tuple(runs), (None,) * len(runs))


def _score_groups(n_seq: int, n_heads: int, n_keys: int, n_queries: int) -> Iterator[Groups]:
    """(sequences, heads) of ``n_seq`` sequences, in groups whose [b, h, keys, queries] scores
    hold about ``_CHUNK`` floats."""
    per_head = max(n_keys * n_queries, 1)
    seqs = max(1, _CHUNK // (n_heads * per_head))
    heads = n_heads if seqs > 1 else max(1, min(n_heads, _CHUNK // per_head))
    for i in range(0, n_seq, seqs):
        for h in range(0, n_heads, heads):
            yield slice(i, i + seqs), slice(h, h + heads)


Groups = tuple[slice, slice]


def _query_pieces(
    start: int, n_seq: int, t: int, rows: slice
) -> Iterator[tuple[slice, slice, int]]:
    """The queries of ``rows`` that fall in a run of ``n_seq`` sequences of ``t`` tokens from
    token ``start``, as pieces (sequences of the run, their queries, first token): whole
    sequences together, and a sequence cut by the edge of ``rows`` on its own."""
    a, b = max(rows.start, start), min(rows.stop, start + n_seq * t)
    while a < b:
        seq, q = divmod(a - start, t)
        if q == 0 and b - a >= t:  # whole sequences, as many as there are
            n = (b - a) // t
            yield slice(seq, seq + n), slice(0, t), a
            a += n * t
        else:  # part of one sequence
            end = min(b - a, t - q)
            yield slice(seq, seq + 1), slice(q, q + end), a
            a += end


def attention(
    qkv: np.ndarray,
    segs: Segments,
    n_heads: int,
    scale: float,
    rows: slice | None = None,
    probs: np.ndarray | None = None,
    *,
    first_only: bool = False,
) -> np.ndarray:  # [N, 3D] -> [n, D], n the rows asked for (first_only: [m, D])
    """Multi-head scaled dot-product attention of each sequence's tokens to each other:
    ``softmax(q k^T * scale + position_bias + key_bias) v`` for every head, heads merged back
    to [., D] (``position_bias``: MPNet's, when ``segs`` has one).

    ``qkv`` holds every token's q, k and v side by side. Only the queries of ``rows`` (default:
    all) are computed, attending to every key of their sequence; their q part is scaled in
    place. With ``first_only``, only the first query of each sequence that starts within
    ``rows``: one output row per such sequence. ``probs`` ([B, H, T, T], one run of B
    sequences), if given, receives their probabilities.

    How: scores are made a cache-sized group at a time (several short sequences with all their
    heads, or a few heads of a long one). They are computed transposed, [keys, queries], so that
    the max and sum over keys run down columns (vectorised) instead of along many short rows;
    without ``probs`` the softmax's division is applied to the [T, Dh] context instead of the
    [T, T] probabilities; heads are strided views, never copies. Equal, up to rounding, to
    ``reference.attention`` (its ``split_heads``, ``softmax`` and ``merge_heads``).
    """
    n, three_d = qkv.shape
    rows = rows or slice(0, n)
    d = three_d // 3
    n_out = len(segs.firsts_in(rows)) if first_only else rows.stop - rows.start
    context = np.empty((n_out, d), FLOAT)
    done = 0  # first_only: the output rows of the runs before this one
    for (start, n_seq, t), key_bias in zip(segs.runs, segs.key_bias, strict=True):
        run = qkv[start : start + n_seq * t].reshape(n_seq, t, 3, n_heads, d // n_heads)
        k, v = (run[:, :, i].transpose(0, 2, 1, 3) for i in (1, 2))  # [n_seq, H, T, Dh] views
        if first_only:  # sequences lo..hi-1 of the run start within rows: query 0 of each
            lo = -(-(max(rows.start, start) - start) // t)
            hi = min(n_seq, -(-(rows.stop - start) // t)) if rows.stop > start else 0
            pieces = [(slice(lo, hi), slice(0, 1), done)] if lo < hi else []
            done += max(hi - lo, 0)
        else:  # (sequences, queries, output row of the first)
            pieces = [(s, q, a - rows.start) for s, q, a in _query_pieces(start, n_seq, t, rows)]
        for seqs, queries, at in pieces:
            q = run[seqs, queries, 0].transpose(0, 2, 1, 3)  # [b, H, Tq, Dh], a view
            n_q = queries.stop - queries.start
            out = context[at : at + q.shape[0] * n_q].reshape(q.shape[0], n_q, n_heads, -1)
            out = out.transpose(0, 2, 1, 3)  # [b, H, Tq, Dh], a view into context
            q *= scale * LOG2_E  # scores in base 2: softmax(s) = 2^(s log2 e) / sum(...)
            bias = None if key_bias is None else key_bias[seqs]  # [b, T keys]
            for g_seq, g_head in _score_groups(q.shape[0], n_heads, t, n_q):
                group = (g_seq, g_head)
                scores = np.matmul(k[seqs][group], q[group].swapaxes(-1, -2))  # [b, h, Tk, Tq]
                if segs.position_bias is not None:  # the same [h, Tk, Tq] for every sequence
                    scores += segs.position_bias[g_head, :t, queries]
                if bias is not None:
                    scores += bias[g_seq, None, :, None]
                # fmax, not max: the same maximum here (a NaN makes the softmax NaN either
                # way), and NumPy's fmax reduces down columns 3x faster than its max
                scores -= np.fmax.reduce(scores, axis=2, keepdims=True)
                np.exp2(scores, out=scores)
                total = scores.sum(axis=2, keepdims=True).swapaxes(-1, -2)  # [b, h, Tq, 1]
                weights = scores.swapaxes(-1, -2)  # [b, h, Tq, Tk], unnormalised
                if probs is None:
                    np.matmul(weights, v[seqs][group], out=out[group])  # [b, h, Tq, Dh]
                    out[group] /= total
                else:
                    p = probs[seqs, :, queries][group]  # [b, h, Tq, Tk], a view
                    np.divide(weights, total, out=p)
                    np.matmul(p, v[seqs][group], out=out[group])
    return context

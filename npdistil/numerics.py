"""The numerical building blocks of the forward pass, each a function of float32 arrays.

`model.py` says *what* DistilBERT computes with these; this module says *how*, and is where
speed work belongs. Functions marked "in place" overwrite their first argument and return it:
the forward pass owns its activations, so reusing their memory saves allocations.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Linear", "LayerNorm", "linear", "layer_norm", "gelu", "relu", "erf", "softmax"]

FLOAT = np.float32


class Linear(NamedTuple):
    """An affine map ``y = x @ weight + bias``, weight stored [in, out] (transposed once, at
    conversion, from PyTorch's [out, in])."""

    weight: np.ndarray  # [in, out]
    bias: np.ndarray  # [out]


class LayerNorm(NamedTuple):
    """Per-feature scale and shift applied after normalising over the last axis."""

    weight: np.ndarray  # [D]
    bias: np.ndarray  # [D]


def linear(x: np.ndarray, lin: Linear) -> np.ndarray:  # [..., in] -> [..., out]
    y = x @ lin.weight
    y += lin.bias
    return y


def layer_norm(x: np.ndarray, norm: LayerNorm, eps: float) -> np.ndarray:  # [..., D], in place
    """LayerNorm over the last axis with the biased variance, as torch.nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    x -= mean
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= norm.weight
    x += norm.bias
    return x


# Abramowitz & Stegun 7.1.26: erf(x) = 1 - t * P(t) * exp(-x^2), t = 1 / (1 + p |x|),
# |error| <= 1.5e-7, about float32 resolution. NumPy has no erf and SciPy is not a dependency.
_ERF_P = 0.3275911
_ERF_COEFFS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def erf(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """The error function to within 1.5e-7, elementwise, in float32.

    >>> import math
    >>> round(float(erf(np.array([0.5], np.float32))[0]), 6) == round(math.erf(0.5), 6)
    True
    """
    x = np.asarray(x, dtype=FLOAT)
    a = np.abs(x)
    t = a * FLOAT(_ERF_P)
    t += 1
    np.reciprocal(t, out=t)
    poly = np.full_like(t, _ERF_COEFFS[0])
    for c in _ERF_COEFFS[1:]:  # Horner: ((a0 t + a1) t + a2) ...
        poly *= t
        poly += FLOAT(c)
    poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # 1 - erf(|x|)
    np.subtract(1, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def gelu(x: np.ndarray) -> np.ndarray:  # [...], in place
    """HF "gelu": the exact form ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, not tanh."""
    cdf = erf(x * FLOAT(1 / np.sqrt(2)))
    cdf += 1
    cdf *= 0.5
    x *= cdf
    return x


def relu(x: np.ndarray) -> np.ndarray:  # [...], in place
    return np.maximum(x, 0, out=x)


def softmax(x: np.ndarray) -> np.ndarray:  # [..., N], in place over the last axis
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x

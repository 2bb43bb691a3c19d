"""Logits -> scores, as the pipelines compute them; in float64, since scores are compared
with transformers' to 1e-5 and a probability near 1 keeps few float32 digits."""

from __future__ import annotations

import numpy as np

from ..model import reference

__all__ = ["softmax", "sigmoid"]


def softmax(logits: np.ndarray) -> np.ndarray:  # [..., n] -> [..., n]
    """Probabilities over the last axis (``reference.softmax``, in float64).

    >>> softmax(np.array([0.0, np.log(3.0)])).round(3).tolist()
    [0.25, 0.75]
    """
    return reference.softmax(np.asarray(logits, dtype=np.float64))


def sigmoid(logits: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """Each logit's own probability, 1 / (1 + exp(-x)).

    >>> sigmoid(np.array([0.0])).tolist()
    [0.5]
    """
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

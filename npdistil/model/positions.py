"""Where each token is: the rows of the position table it reads, and MPNet's relative buckets.

Both forward passes (``reference.py`` and ``transformer.py``) take positions from here, so the
families' two ways of numbering tokens, and MPNet's distance buckets, live in one place.

**Absolute positions.** DistilBERT and BERT number a sequence's tokens 0, 1, 2, ... RoBERTa
(XLM-RoBERTa, CamemBERT) and MPNet inherited fairseq's numbering: tokens that are not padding
count from ``padding_idx + 1``, and padding tokens read row ``padding_idx`` (transformers'
``create_position_ids_from_input_ids``: ``cumsum(ids != pad) * (ids != pad) + pad``). So
roberta-base's 514-row table holds 512 tokens.

**Relative buckets (MPNet).** Every layer adds to the score of query i and key j a learned bias
per head, looked up by the bucket of the distance ``i - j`` (T5's scheme, as MPNet's encoder
computes it from positions 0..T-1 of each sequence): half the buckets for keys left of the
query (or on it), half for keys to its right; within each half, distances below a quarter of
the buckets are exact, larger ones share buckets logarithmically up to ``MAX_DISTANCE``, and
everything farther falls into the last one.
"""

from __future__ import annotations

import math

import numpy as np

from .config import EncoderConfig

__all__ = ["MAX_DISTANCE", "position_ids", "relative_buckets"]

# transformers' MPNetEncoder.relative_position_bucket is called with its default max_distance.
MAX_DISTANCE = 128


def position_ids(input_ids: np.ndarray, config: EncoderConfig) -> np.ndarray:  # [..., T] -> same
    """The position-table row of every token of right-padded or unpadded sequences (the last
    axis runs along each sequence).

    >>> ids = np.array([[0, 31, 32, 2, 1, 1]])  # <s> a b </s> <pad> <pad>
    >>> position_ids(ids, EncoderConfig(model_type="roberta", pad_token_id=1)).tolist()
    [[2, 3, 4, 5, 1, 1]]
    >>> position_ids(ids, EncoderConfig()).tolist()  # DistilBERT: 0..T-1, padding or not
    [[0, 1, 2, 3, 4, 5]]
    """
    if config.position_offset == 0:
        return np.broadcast_to(np.arange(input_ids.shape[-1]), input_ids.shape).copy()
    real = input_ids != config.padding_idx  # [..., T]
    return np.cumsum(real, axis=-1) * real + config.padding_idx  # pads: padding_idx


def relative_buckets(n_tokens: int, n_buckets: int) -> np.ndarray:  # -> [T, T] int64
    """The bucket of the distance from query i (rows) to key j (columns) of a sequence of
    ``n_tokens`` tokens, as transformers' ``MPNetEncoder.relative_position_bucket``.

    >>> relative_buckets(5, 32)[2].tolist()  # query 2: keys 0 and 1 left, 3 and 4 right
    [2, 1, 0, 17, 18]
    >>> relative_buckets(300, 32)[299, [283, 236, 171, 0]].tolist()  # 16, 63, 128, 299 back
    [10, 13, 15, 15]
    """
    queries = np.arange(n_tokens)[:, None]
    keys = np.arange(n_tokens)[None, :]
    n = queries - keys  # [T, T]: > 0 when the key is left of the query
    half = n_buckets // 2
    exact = half // 2
    right = np.where(n < 0, half, 0)  # keys right of the query take the upper half
    n = np.abs(n)
    # Farther keys: the remaining half - exact buckets spread logarithmically over distances
    # exact..MAX_DISTANCE (transformers computes this in float32; float64 gives the same
    # buckets for every distance, tested), the farthest all in the last bucket.
    far = exact + (
        np.log(np.maximum(n, 1) / exact) / math.log(MAX_DISTANCE / exact) * (half - exact)
    ).astype(np.int64)
    return right + np.where(n < exact, n, np.minimum(far, half - 1))

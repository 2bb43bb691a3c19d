"""Synthetic full-size DistilBERT weights and inputs, made with NumPy alone.

The real `distilbert-base-cased` checkpoint cannot be downloaded here, so parity at full size is
checked on weights of the same architecture drawn from a seeded NumPy generator. Both
`scripts/make_reference.py` (which runs them through transformers) and the tests (which run them
through npdistil) import this module, so the two sides see the very same arrays.

NumPy does not promise that a seeded `Generator` draws the same numbers in every release; the
digest of the weights is stored with the reference outputs, and the tests compare it first so a
change of stream is reported as such rather than as a parity failure.

>>> sd = full_size_state_dict(0)
>>> sd["embeddings.word_embeddings.weight"].shape
(28996, 768)
>>> len(sd)
100
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = [
    "CLS_ID",
    "SEP_ID",
    "PAD_ID",
    "FULL_SIZE_BATCH_LENGTHS",
    "full_size_config",
    "full_size_key_shapes",
    "full_size_state_dict",
    "full_size_inputs",
    "state_dict_digest",
]

# Special-token ids of the real cased vocabulary (vocab.txt of distilbert-base-cased).
PAD_ID = 0
CLS_ID = 101
SEP_ID = 102
# The first id after [PAD], [unused1-99], [UNK], [CLS], [SEP], [MASK] and 2 more unused: the
# random inputs draw ordinary tokens from [FIRST_ORDINARY_ID, vocab_size).
FIRST_ORDINARY_ID = 106

# Lengths of the padded batch (b): one full row, one half, one mostly padding.
FULL_SIZE_BATCH_LENGTHS = (40, 17, 3)
# Length of the single long sequence (a): the model's whole position table.
FULL_SIZE_LONG_LENGTH = 512


def full_size_config() -> dict[str, Any]:
    """The `config.json` that transformers 5 writes for a float32 `DistilBertModel` of
    distilbert-base-cased's shape (without `transformers_version`)."""
    return {
        "activation": "gelu",
        "architectures": ["DistilBertModel"],
        "attention_dropout": 0.1,
        "bos_token_id": None,
        "dim": 768,
        "dropout": 0.1,
        "dtype": "float32",
        "eos_token_id": None,
        "hidden_dim": 3072,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "model_type": "distilbert",
        "n_heads": 12,
        "n_layers": 6,
        "pad_token_id": 0,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": False,
        "tie_word_embeddings": True,
        "vocab_size": 28996,
    }


def full_size_key_shapes(config: dict[str, Any] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """`DistilBertModel` state-dict keys (no `distilbert.` prefix) and shapes, in the order the
    weights are drawn."""
    c = full_size_config() if config is None else config
    d, f = c["dim"], c["hidden_dim"]
    out: list[tuple[str, tuple[int, ...]]] = [
        ("embeddings.word_embeddings.weight", (c["vocab_size"], d)),
        ("embeddings.position_embeddings.weight", (c["max_position_embeddings"], d)),
        ("embeddings.LayerNorm.weight", (d,)),
        ("embeddings.LayerNorm.bias", (d,)),
    ]
    for i in range(c["n_layers"]):
        p = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            out += [(f"{p}attention.{lin}.weight", (d, d)), (f"{p}attention.{lin}.bias", (d,))]
        out += [(f"{p}sa_layer_norm.weight", (d,)), (f"{p}sa_layer_norm.bias", (d,))]
        out += [(f"{p}ffn.lin1.weight", (f, d)), (f"{p}ffn.lin1.bias", (f,))]
        out += [(f"{p}ffn.lin2.weight", (d, f)), (f"{p}ffn.lin2.bias", (d,))]
        out += [(f"{p}output_layer_norm.weight", (d,)), (f"{p}output_layer_norm.bias", (d,))]
    return out


def full_size_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 weights for a full-size `DistilBertModel`, drawn with `np.random.default_rng(seed)`.

    Matrices and embeddings ~ N(0, 0.02) (BERT's init); LayerNorm weights 1 + N(0, 0.1) and all
    biases N(0, 0.02), so that no parameter is trivially zero or one.
    """
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for key, shape in full_size_key_shapes():
        x = rng.standard_normal(shape, dtype=np.float32)
        if "LayerNorm" in key or "layer_norm" in key:
            if key.endswith(".weight"):
                x *= np.float32(0.1)
                x += np.float32(1.0)
            else:
                x *= np.float32(0.02)
        else:
            x *= np.float32(0.02)
        sd[key] = x
    return sd


def full_size_inputs(seed: int = 1234) -> dict[str, np.ndarray]:
    """Token ids and masks for the full-size reference.

    - `long_input_ids` / `long_attention_mask`: [1, 512], random ordinary ids between [CLS] and
      [SEP], mask all ones.
    - `batch_input_ids` / `batch_attention_mask`: [3, 40], rows of lengths 40, 17 and 3 (each
      [CLS] ... [SEP]) right-padded with [PAD] = 0.
    """
    rng = np.random.default_rng(seed)
    vocab = full_size_config()["vocab_size"]

    def row(n: int) -> np.ndarray:
        ids = rng.integers(FIRST_ORDINARY_ID, vocab, size=n, dtype=np.int64)
        ids[0], ids[-1] = CLS_ID, SEP_ID
        return ids

    long_ids = row(FULL_SIZE_LONG_LENGTH)[None, :]
    t = max(FULL_SIZE_BATCH_LENGTHS)
    batch_ids = np.full((len(FULL_SIZE_BATCH_LENGTHS), t), PAD_ID, dtype=np.int64)
    batch_mask = np.zeros((len(FULL_SIZE_BATCH_LENGTHS), t), dtype=np.int64)
    for i, n in enumerate(FULL_SIZE_BATCH_LENGTHS):
        batch_ids[i, :n] = row(n)
        batch_mask[i, :n] = 1
    return {
        "long_input_ids": long_ids,
        "long_attention_mask": np.ones_like(long_ids),
        "batch_input_ids": batch_ids,
        "batch_attention_mask": batch_mask,
    }


def state_dict_digest(sd: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's key, dtype, shape and little-endian C-order bytes, keys sorted.

    >>> state_dict_digest({"a": np.zeros(2, np.float32)}) == state_dict_digest(
    ...     {"a": np.zeros(2, np.float32)})
    True
    """
    h = hashlib.sha256()
    for key in sorted(sd):
        a = np.asarray(sd[key])
        a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
        h.update(f"{key}|{a.dtype.str}|{list(a.shape)}\n".encode())
        h.update(a.data)
    return h.hexdigest()

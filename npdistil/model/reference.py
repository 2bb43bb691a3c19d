"""The encoder as a textbook writes it: the whole forward pass in plain NumPy. Start reading here.

Shape legend: B batch, T tokens, D model width (``dim``), H heads (``n_heads``), Dh head width
(D / H), F feed-forward width (``hidden_dim``), V vocabulary, P positions.

    input_ids [B, T] -> embed -> n_layers x block -> last_hidden_state [B, T, D]

Every block is post-LN, as in BERT: ``h = LN(x + attention(x))``, ``out = LN(h + ffn(h))``.
The families differ by data only: BERT and RoBERTa add a token-type row to each token's
embedding; RoBERTa and MPNet number positions from ``pad_token_id + 1`` (``positions.py``);
MPNet adds a learned bias for each head and query-key distance to every layer's scores
(``relative_position_bias``).

``transformer.py`` computes the same numbers fast (threads, fused kernels, packed batches without
padding); the tests hold it equal to this file, and this file equal to Hugging Face
transformers. Here every step is one plain line, with no speed tricks, and the arithmetic is
float64 by default: that makes this file the yardstick both float32 implementations are
measured against (``dtype=np.float32`` shows what float32 rounding alone does).

``forward(model, input_ids)`` takes anything with ``.weights`` and ``.config`` (a loaded
``npdistil.Model``); ``encoder(input_ids, attention_mask, weights, config)`` takes them
separately. The weights are the typed records of ``transformer.py``: a Linear's weight is stored
[in, out], so ``y = x @ W + b``, and q, k and v sit side by side in one [D, 3D] matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError
from .config import DistilBertConfig
from .numerics import LayerNorm, Linear
from .positions import position_ids, relative_buckets
from .quantize import float32_weights
from .transformer import Block, Embeddings, ModelOutput, Weights

__all__ = ["forward", "encoder", "embed", "relative_position_bias", "block", "attention"]
__all__ += ["feed_forward"]
__all__ += ["linear", "layer_norm", "gelu", "relu", "softmax", "split_heads", "merge_heads"]

# trace(name, array) is called with every intermediate result, in order (see npdistil trace).
Trace = Callable[[str, np.ndarray], None]


def _quiet(name: str, x: np.ndarray) -> None:
    pass


# ---- the building blocks ---------------------------------------------------------------------


def linear(x: np.ndarray, lin: Linear) -> np.ndarray:  # [..., in] -> [..., out]
    return x @ lin.weight + lin.bias  # weight stored [in, out]: PyTorch's [out, in], transposed


def layer_norm(x: np.ndarray, norm: LayerNorm, eps: float) -> np.ndarray:  # [..., D] -> [..., D]
    mean = x.mean(axis=-1, keepdims=True)  # [..., D] -> [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1], biased, as torch
    return (x - mean) / np.sqrt(var + eps) * norm.weight + norm.bias  # [..., D]


# NumPy has no erf; the standard library's is accurate to double precision, one number at a time.
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    """HF "gelu": the exact ``x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, not the tanh form."""
    return (0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype)


def relu(x: np.ndarray) -> np.ndarray:  # [...] -> [...]
    return np.maximum(x, 0)


ACTIVATIONS = {"gelu": gelu, "relu": relu}


def softmax(x: np.ndarray) -> np.ndarray:  # [..., K] -> [..., K], rows summing to 1
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # the max subtracted: exp never overflows
    return e / e.sum(axis=-1, keepdims=True)


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:  # [B, T, D] -> [B, H, T, Dh]
    batch, tokens, width = x.shape
    heads = x.reshape(batch, tokens, n_heads, width // n_heads)  # [B, T, H, Dh]
    return heads.transpose(0, 2, 1, 3)  # [B, H, T, Dh]


def merge_heads(x: np.ndarray) -> np.ndarray:  # [B, H, T, Dh] -> [B, T, D]
    batch, n_heads, tokens, head_width = x.shape
    side_by_side = x.transpose(0, 2, 1, 3)  # [B, T, H, Dh]
    return side_by_side.reshape(batch, tokens, n_heads * head_width)  # [B, T, D]


# ---- the model -------------------------------------------------------------------------------


def embed(
    input_ids: np.ndarray,
    emb: Embeddings,
    config: DistilBertConfig,
    token_type_ids: np.ndarray | None = None,
    dtype: Any = np.float64,
    trace: Trace = _quiet,
) -> np.ndarray:  # [B, T] -> [B, T, D]
    x = emb.word[input_ids].astype(dtype)  # [B, T] -> [B, T, D]: one row of the table per id
    # 0..T-1 (padding is on the right); RoBERTa, MPNet: 2..T+1, and row 1 for padding
    x = x + emb.position[position_ids(input_ids, config)]  # + [B, T, D]
    if emb.token_type is not None:  # BERT, RoBERTa: [types, D], sentence A or B of a pair
        types = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids  # [B, T]
        x = x + emb.token_type[types]  # + [B, T, D]
    elif token_type_ids is not None and np.any(token_type_ids):
        raise InputError("token_type_ids: this model has no token-type embeddings")
    trace("embeddings.sum", x)
    return layer_norm(x, emb.norm, config.layer_norm_eps)  # [B, T, D]


def relative_position_bias(
    table: np.ndarray, n_tokens: int, config: DistilBertConfig
) -> np.ndarray:  # [buckets, H] -> [H, T, T]
    """MPNet: each head's bias for query i and key j, by the bucket of their distance
    (positions.py), the same in every layer and every sequence."""
    buckets = relative_buckets(n_tokens, config.relative_attention_num_buckets)  # [T, T]
    return table[buckets].transpose(2, 0, 1)  # [T, T] -> [T, T, H] -> [H, T, T]


def attention(
    x: np.ndarray,
    mask_bias: np.ndarray,
    blk: Block,
    config: DistilBertConfig,
    trace: Trace = _quiet,
    position_bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # [B, T, D] -> [B, T, D], probabilities [B, H, T, T]
    w_q, w_k, w_v = np.split(blk.qkv.weight, 3, axis=1)  # [D, 3D] -> 3 x [D, D]
    b_q, b_k, b_v = np.split(blk.qkv.bias, 3)  # [3D] -> 3 x [D]
    q = split_heads(x @ w_q + b_q, config.n_heads)  # [B, T, D] -> [B, H, T, Dh]
    k = split_heads(x @ w_k + b_k, config.n_heads)  # [B, T, D] -> [B, H, T, Dh]
    v = split_heads(x @ w_v + b_v, config.n_heads)  # [B, T, D] -> [B, H, T, Dh]
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(config.head_dim)  # [B, H, T, T]: query x key
    if position_bias is not None:  # MPNet: + [H, T, T], by query-key distance
        scores = scores + position_bias
    scores = scores + mask_bias[:, None, None, :]  # + [B, 1, 1, T]: padding keys get -huge
    probs = softmax(scores)  # [B, H, T, T]: each query's weights over the keys sum to 1
    context = probs @ v  # [B, H, T, T] @ [B, H, T, Dh] -> [B, H, T, Dh]
    out = linear(merge_heads(context), blk.out)  # [B, H, T, Dh] -> [B, T, D] -> [B, T, D]
    for name, value in (("q", q), ("k", k), ("v", v), ("scores", scores), ("probs", probs)):
        trace(f"attention.{name}", value)
    trace("attention.output", out)
    return out, probs


def feed_forward(
    h: np.ndarray, blk: Block, config: DistilBertConfig, trace: Trace = _quiet
) -> np.ndarray:  # [B, T, D] -> [B, T, D]
    hidden = ACTIVATIONS[config.activation](linear(h, blk.ffn_in))  # [B, T, D] -> [B, T, F]
    trace("ffn.hidden", hidden)
    out = linear(hidden, blk.ffn_out)  # [B, T, F] -> [B, T, D]
    trace("ffn.output", out)
    return out


def block(
    x: np.ndarray,
    mask_bias: np.ndarray,
    blk: Block,
    config: DistilBertConfig,
    trace: Trace = _quiet,
    position_bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # [B, T, D] -> [B, T, D], probabilities [B, H, T, T]
    eps = config.layer_norm_eps
    attended, probs = attention(x, mask_bias, blk, config, trace, position_bias)  # [B, T, D]
    h = layer_norm(x + attended, blk.attention_norm, eps)  # residual, then LN: [B, T, D]
    trace("attention_norm", h)
    out = layer_norm(h + feed_forward(h, blk, config, trace), blk.output_norm, eps)  # [B, T, D]
    trace("output_norm", out)
    return out, probs


def encoder(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    *,
    token_type_ids: np.ndarray | None = None,
    dtype: Any = np.float64,
    trace: Trace = _quiet,
) -> ModelOutput:  # [B, T] ids and mask -> [B, T, D], every layer's [B, T, D] and [B, H, T, T]
    """The encoder on a right-padded batch, as transformers' ``DistilBertModel`` (or
    ``BertModel``, ``RobertaModel``, ``MPNetModel``)."""
    # Padding keys get the dtype's minimum added to their scores (transformers' choice: -inf
    # would make a row with every key masked NaN; this makes it uniform), so softmax gives them 0.
    mask_bias = np.where(attention_mask == 0, np.finfo(dtype).min, 0).astype(dtype)  # [B, T]
    x = embed(input_ids, weights.embeddings, config, token_type_ids, dtype, trace)  # [B, T, D]
    trace("embeddings", x)
    position_bias = None
    if weights.relative_attention_bias is not None:  # MPNet: one [H, T, T] for every layer
        table = weights.relative_attention_bias.astype(dtype)  # [buckets, H]
        position_bias = relative_position_bias(table, input_ids.shape[1], config)
    hidden_states, attentions = [x], []
    for i, blk in enumerate(weights.blocks):

        def layer_trace(name: str, value: np.ndarray, i: int = i) -> None:
            trace(f"layer.{i}.{name}", value)

        x, probs = block(x, mask_bias, blk, config, layer_trace, position_bias)  # [B, T, D]
        hidden_states.append(x)
        attentions.append(probs)
    return ModelOutput(x, tuple(hidden_states), tuple(attentions))


def forward(
    model: Any,
    input_ids: Any,
    attention_mask: Any = None,
    *,
    token_type_ids: Any = None,
    dtype: Any = np.float64,
    trace: Trace = _quiet,
) -> ModelOutput:  # [B, T] -> [B, T, D]
    """``model(input_ids, attention_mask, output_hidden_states=True, output_attentions=True)``,
    the textbook way: ``model`` is anything with ``.weights`` and ``.config``.

    >>> import npdistil
    >>> from npdistil.model import reference
    >>> model = npdistil.load("tests/fixtures/tiny")  # doctest: +SKIP
    >>> reference.forward(model, [[2, 180, 3]]).last_hidden_state.shape  # doctest: +SKIP
    (1, 3, 20)
    """
    ids = np.atleast_2d(np.asarray(input_ids))  # [T] or [B, T] -> [B, T]
    mask = np.ones_like(ids) if attention_mask is None else np.atleast_2d(attention_mask)
    types = None if token_type_ids is None else np.atleast_2d(token_type_ids)  # [B, T]
    weights = float32_weights(model.weights)  # an int8 or float16 file: widened (quantize.py)
    return encoder(ids, mask, weights, model.config, token_type_ids=types, dtype=dtype, trace=trace)

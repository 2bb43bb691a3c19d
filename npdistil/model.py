"""DistilBERT's forward pass as a page of pure functions over NumPy arrays.

Shape legend: B batch, T tokens, D model width (dim), H heads, Dh head width (D / H),
F feed-forward width (hidden_dim), V vocabulary, P positions, L labels.

    input_ids -> embeddings -> n_layers x block -> last_hidden_state -> (optional) a task head

Each block is post-LN, as in BERT: ``h = LN(x + attention(x))``, ``out = LN(h + ffn(h))``.
The numbers follow Hugging Face transformers' ``modeling_distilbert.py``, the oracle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import DistilBertConfig
from .numerics import LayerNorm, Linear, gelu, layer_norm, linear, relu, softmax

__all__ = [
    "Embeddings",
    "Block",
    "Weights",
    "ModelOutput",
    "MaskedLMHead",
    "SequenceClassificationHead",
    "TokenClassificationHead",
    "QuestionAnsweringHead",
    "forward",
    "attention_bias",
]


# ---- weights ---------------------------------------------------------------------------------


class Embeddings(NamedTuple):
    word: np.ndarray  # [V, D]
    position: np.ndarray  # [P, D], learned or the fixed sinusoidal table
    norm: LayerNorm  # [D]


class Block(NamedTuple):
    qkv: Linear  # [D, 3D]: the q, k and v projections side by side, one matmul for all three
    out: Linear  # [D, D]
    attention_norm: LayerNorm  # [D]  ("sa_layer_norm")
    ffn_in: Linear  # [D, F]  ("lin1")
    ffn_out: Linear  # [F, D]  ("lin2")
    output_norm: LayerNorm  # [D]  ("output_layer_norm")


class Weights(NamedTuple):
    embeddings: Embeddings
    blocks: tuple[Block, ...]  # n_layers


class ModelOutput(NamedTuple):
    """What ``DistilBertModel`` returns, with the same field names."""

    last_hidden_state: np.ndarray  # [B, T, D]
    hidden_states: tuple[np.ndarray, ...] | None = None  # n_layers + 1 of [B, T, D]
    attentions: tuple[np.ndarray, ...] | None = None  # n_layers of [B, H, T, T]


# ---- the encoder -----------------------------------------------------------------------------


def embed(input_ids: np.ndarray, emb: Embeddings, eps: float) -> np.ndarray:  # [B, T] -> [B, T, D]
    x = emb.word[input_ids]  # [B, T] -> [B, T, D]
    x += emb.position[: input_ids.shape[1]]  # positions run 0..T-1: padding is on the right
    return layer_norm(x, emb.norm, eps)


def attention_bias(attention_mask: np.ndarray) -> np.ndarray:  # [B, T] -> [B, 1, 1, T]
    """0 where a key may be attended to, float32's minimum where it is padding.

    The minimum, not -inf, as in transformers: a row with every key masked then gets a uniform
    softmax instead of NaN.
    """
    bias = np.where(attention_mask == 0, np.finfo(np.float32).min, np.float32(0))
    return bias.astype(np.float32)[:, None, None, :]


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:  # [B, T, D] -> [B, H, T, Dh]
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:  # [B, H, T, Dh] -> [B, T, D]
    b, h, t, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * dh)


def self_attention(
    x: np.ndarray, bias: np.ndarray, blk: Block, config: DistilBertConfig
) -> tuple[np.ndarray, np.ndarray]:  # [B, T, D] -> [B, T, D], probabilities [B, H, T, T]
    q, k, v = np.split(linear(x, blk.qkv), 3, axis=-1)  # [B, T, D] -> 3 x [B, T, D]
    q = split_heads(q, config.n_heads)  # [B, T, D] -> [B, H, T, Dh]
    k = split_heads(k, config.n_heads)
    v = split_heads(v, config.n_heads)
    scores = q @ k.swapaxes(-1, -2)  # [B, H, T, Dh] @ [B, H, Dh, T] -> [B, H, T, T]
    scores *= np.float32(config.attention_scale)
    scores += bias  # padding keys get float32's minimum
    probs = softmax(scores)  # over the keys
    context = merge_heads(probs @ v)  # [B, H, T, T] @ [B, H, T, Dh] -> [B, T, D]
    return linear(context, blk.out), probs


def activation(x: np.ndarray, config: DistilBertConfig) -> np.ndarray:  # [...], in place
    return gelu(x) if config.activation == "gelu" else relu(x)


def feed_forward(h: np.ndarray, blk: Block, config: DistilBertConfig) -> np.ndarray:  # [B, T, D]
    f = activation(linear(h, blk.ffn_in), config)  # [B, T, D] -> [B, T, F]
    return linear(f, blk.ffn_out)  # [B, T, F] -> [B, T, D]


def block(
    x: np.ndarray, bias: np.ndarray, blk: Block, config: DistilBertConfig
) -> tuple[np.ndarray, np.ndarray]:  # [B, T, D] -> [B, T, D], probabilities [B, H, T, T]
    attn, probs = self_attention(x, bias, blk, config)
    attn += x
    h = layer_norm(attn, blk.attention_norm, config.layer_norm_eps)  # post-LN
    out = feed_forward(h, blk, config)
    out += h
    return layer_norm(out, blk.output_norm, config.layer_norm_eps), probs


def forward(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    *,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
) -> ModelOutput:  # [B, T] ids and mask -> [B, T, D]
    """The encoder: embeddings, then every block. Inputs are validated by the caller."""
    bias = attention_bias(attention_mask)  # [B, T] -> [B, 1, 1, T]
    x = embed(input_ids, weights.embeddings, config.layer_norm_eps)  # [B, T] -> [B, T, D]
    hidden_states = [x]
    attentions = []
    for blk in weights.blocks:
        x, probs = block(x, bias, blk, config)
        hidden_states.append(x)
        attentions.append(probs)
    return ModelOutput(
        last_hidden_state=x,
        hidden_states=tuple(hidden_states) if output_hidden_states else None,
        attentions=tuple(attentions) if output_attentions else None,
    )


# ---- task heads ------------------------------------------------------------------------------


class MaskedLMHead(NamedTuple):
    transform: Linear  # [D, D]  ("vocab_transform")
    norm: LayerNorm  # [D]  ("vocab_layer_norm")
    projector: Linear  # [D, V]  ("vocab_projector"; weight tied to the word embeddings)


class SequenceClassificationHead(NamedTuple):
    pre_classifier: Linear  # [D, D]
    classifier: Linear  # [D, L]


class TokenClassificationHead(NamedTuple):
    classifier: Linear  # [D, L]


class QuestionAnsweringHead(NamedTuple):
    qa_outputs: Linear  # [D, 2]: start and end logits


def masked_lm_logits(
    hidden: np.ndarray, head: MaskedLMHead, config: DistilBertConfig
) -> np.ndarray:  # [B, T, D] -> [B, T, V]
    x = activation(linear(hidden, head.transform), config)  # [B, T, D] -> [B, T, D]
    x = layer_norm(x, head.norm, config.layer_norm_eps)
    return linear(x, head.projector)  # [B, T, D] -> [B, T, V]


def sequence_classification_logits(
    hidden: np.ndarray, head: SequenceClassificationHead
) -> np.ndarray:  # [B, T, D] -> [B, L]
    pooled = relu(linear(hidden[:, 0], head.pre_classifier))  # the [CLS] token: [B, D]
    return linear(pooled, head.classifier)


def token_classification_logits(
    hidden: np.ndarray, head: TokenClassificationHead
) -> np.ndarray:  # [B, T, D] -> [B, T, L]
    return linear(hidden, head.classifier)


def question_answering_logits(
    hidden: np.ndarray, head: QuestionAnsweringHead
) -> tuple[np.ndarray, np.ndarray]:  # [B, T, D] -> start [B, T], end [B, T]
    logits = linear(hidden, head.qa_outputs)  # [B, T, D] -> [B, T, 2]
    return logits[..., 0].copy(), logits[..., 1].copy()

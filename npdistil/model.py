"""DistilBERT's forward pass as a page of pure functions over NumPy arrays.

Shape legend: B batch, T tokens, N all the tokens of a batch on one axis (B * T, or the sum of
the lengths when packed), D model width (dim), H heads, Dh head width (D / H), F feed-forward
width (hidden_dim), V vocabulary, P positions, L labels.

    input_ids -> embeddings -> n_layers x block -> last_hidden_state -> (optional) a task head

Each block is post-LN, as in BERT: ``h = LN(x + attention(x))``, ``out = LN(h + ffn(h))``.
The numbers follow Hugging Face transformers' ``modeling_distilbert.py``, the oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import kernels
from .config import DistilBertConfig
from .numerics import LayerNorm, Linear, Segments, attention, layer_norm, linear, relu
from .storage import gather_rows

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
    "forward_packed",
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
# Inside the encoder every token is a row of one [N, D] matrix: N = B * T for a padded batch, or
# the sum of the lengths for a packed one. Only attention looks across tokens, and it is told
# where each sequence lies (Segments); everything else runs on all N rows at once.


def embed(
    input_ids: np.ndarray, positions: np.ndarray, emb: Embeddings, eps: float
) -> np.ndarray:  # [N] ids and positions -> [N, D]
    x = gather_rows(emb.word, input_ids)  # [N] -> [N, D]: emb.word[input_ids]
    return layer_norm(x, emb.norm, eps, residual=emb.position[positions])


def self_attention(
    x: np.ndarray, segs: Segments, blk: Block, config: DistilBertConfig, probs: np.ndarray | None
) -> np.ndarray:  # [N, D] -> [N, D]; probabilities into probs [B, H, T, T] if given
    qkv = linear(x, blk.qkv)  # [N, D] -> [N, 3D]: q, k and v of every token, side by side
    # softmax(q k^T / sqrt(Dh) + mask) v for each head of each sequence, heads merged: [N, D]
    context = attention(qkv, segs, config.n_heads, config.attention_scale, probs)
    return linear(context, blk.out)  # [N, D] -> [N, D]


def feed_forward(h: np.ndarray, blk: Block, config: DistilBertConfig) -> np.ndarray:  # [N, D]
    f = linear(h, blk.ffn_in, activation=config.activation)  # [N, D] -> [N, F]
    return linear(f, blk.ffn_out)  # [N, F] -> [N, D]


def block(
    x: np.ndarray, segs: Segments, blk: Block, config: DistilBertConfig, probs: np.ndarray | None
) -> np.ndarray:  # [N, D] -> [N, D]
    eps = config.layer_norm_eps
    attn = self_attention(x, segs, blk, config, probs)
    h = layer_norm(attn, blk.attention_norm, eps, residual=x)  # post-LN: LN(x + attention(x))
    out = feed_forward(h, blk, config)
    return layer_norm(out, blk.output_norm, eps, residual=h)  # LN(h + ffn(h))


def padded_batch(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    keep_hidden_states: bool,
    keep_attentions: bool,
) -> ModelOutput:  # [B, T] ids and mask -> [B, T, D]
    """The encoder on a padded batch, in the calling thread: embeddings, then every block."""
    b, t = input_ids.shape
    segs = Segments.padded(attention_mask)  # B sequences of T tokens; padding keys masked
    positions = np.tile(np.arange(t), b)  # positions run 0..T-1: padding is on the right
    x = embed(input_ids.reshape(-1), positions, weights.embeddings, config.layer_norm_eps)
    hidden_states = [x.reshape(b, t, -1)]  # [N, D] -> [B, T, D], views
    attentions: list[np.ndarray] = []
    for blk in weights.blocks:
        probs = np.empty((b, config.n_heads, t, t), np.float32) if keep_attentions else None
        x = block(x, segs, blk, config, probs)
        hidden_states.append(x.reshape(b, t, -1))
        if probs is not None:
            attentions.append(probs)
    return ModelOutput(
        last_hidden_state=hidden_states[-1],
        hidden_states=tuple(hidden_states) if keep_hidden_states else None,
        attentions=tuple(attentions) if keep_attentions else None,
    )


def packed_batch(
    sequences: Sequence[np.ndarray], weights: Weights, config: DistilBertConfig
) -> list[np.ndarray]:  # n_seq x [n_i] ids -> n_seq x [n_i, D]
    """The encoder on sequences laid back to back without padding, in the calling thread."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # equal lengths
    lengths = [len(sequences[i]) for i in order]  # side by side: attention takes them together
    segs = Segments.packed(lengths)
    ids = np.concatenate([sequences[i] for i in order])  # n_seq x [n_i] -> [N]
    positions = np.concatenate([np.arange(n) for n in lengths])  # each sequence from 0
    x = embed(ids, positions, weights.embeddings, config.layer_norm_eps)  # [N] -> [N, D]
    for blk in weights.blocks:
        x = block(x, segs, blk, config, None)
    pieces = np.split(x, np.cumsum(lengths)[:-1])  # [N, D] -> n_seq x [n_i, D], views
    return [pieces[k] for k in np.argsort(order)]  # back in the caller's order


# ---- entry points: a batch shared between the cores ---------------------------------------------
# A batch is cut into one part per core, each run whole by the functions above in its own
# thread (one-thread BLAS each; see kernels.py for why that beats multi-threaded BLAS). Parts
# are independent, so the results are those of running each sequence alone.

# Splitting costs a thread wake-up and smaller matrix products: parts get at least this many
# tokens.
_MIN_PART_TOKENS = 64


def forward(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    *,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
) -> ModelOutput:  # [B, T] ids and mask -> [B, T, D]
    """The encoder, as transformers' ``DistilBertModel``. Inputs are validated by the caller."""
    b, t = input_ids.shape
    parts = kernels.even_parts(b, min_rows=-(-_MIN_PART_TOKENS // t))  # rows of each part

    def run(i: int) -> ModelOutput:
        rows = parts[i]
        return padded_batch(
            input_ids[rows],
            attention_mask[rows],
            weights,
            config,
            output_hidden_states,
            output_attentions,
        )

    outs = kernels.run_parts(run, len(parts))
    if len(outs) == 1:
        return outs[0]
    return ModelOutput(  # parts' [b_i, ...] -> [B, ...]
        last_hidden_state=np.concatenate([o.last_hidden_state for o in outs]),
        hidden_states=_concatenated([o.hidden_states for o in outs]),
        attentions=_concatenated([o.attentions for o in outs]),
    )


def _concatenated(parts: list[tuple[np.ndarray, ...] | None]) -> tuple[np.ndarray, ...] | None:
    return None if parts[0] is None else tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def forward_packed(
    sequences: Sequence[np.ndarray], weights: Weights, config: DistilBertConfig
) -> list[np.ndarray]:  # n_seq x [n_i] ids -> n_seq x [n_i, D]
    """The last hidden state of each sequence, as if each were run alone, without padding.

    Each sequence is a 1-D array of token ids, special tokens included, at most
    ``max_position_embeddings`` long. All run as batches of their tokens back to back, attention
    kept inside each sequence, so linear layers and norms see no padding at all: that is what
    makes mixed lengths cheap. Inputs are validated by the caller. The results are views into
    a few [N, D] arrays (one per core).
    """
    if not sequences:
        return []
    # Work per sequence: linear layers grow with n, attention with n^2.
    cost = [len(s) * (1 + len(s) / config.hidden_dim) for s in sequences]
    parts = kernels.balanced_parts(cost, min_cost=_MIN_PART_TOKENS)  # sequence indices
    outs = kernels.run_parts(
        lambda i: packed_batch([sequences[j] for j in parts[i]], weights, config), len(parts)
    )
    result: list[np.ndarray] = [np.empty(0)] * len(sequences)
    for part, out in zip(parts, outs, strict=True):
        for j, hidden in zip(part, out, strict=True):
            result[j] = hidden
    return result


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
    x = linear(hidden, head.transform, activation=config.activation)  # [B, T, D] -> [B, T, D]
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

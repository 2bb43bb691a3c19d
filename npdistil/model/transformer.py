"""The encoder's forward pass, fast: a page of functions over NumPy arrays, keeping no state.

``reference.py`` is the same model as a textbook writes it; start there. This file computes the
same numbers (tested equal) in the shape that is fast on a CPU: a batch's tokens on one flat
axis, padding skipped, the tokens cut into one part per core (a short input: each product's
columns). The helpers it calls (``numerics.py``) work in place on activations the pass owns,
and the parts of a split pass write their own rows (or columns) of a few shared arrays
(``Scratch``, ``Shared``); nothing else is written.

Shape legend: B batch, T tokens, N all the tokens of a batch on one axis (B * T, or the sum of
the lengths when packed), D model width (dim), H heads, Dh head width (D / H), F feed-forward
width (hidden_dim), V vocabulary, P positions, L labels.

    input_ids -> embeddings -> n_layers x block -> last_hidden_state -> (optional) a task head

Each block is post-LN, as in BERT: ``h = LN(x + attention(x))``, ``out = LN(h + ffn(h))``.
The numbers follow Hugging Face transformers (``modeling_distilbert.py``, ``modeling_bert.py``,
``modeling_roberta.py``, ``modeling_mpnet.py``), the oracle. The families differ only by data:
token types (BERT, RoBERTa), where positions start (``positions.py``), MPNet's relative position
bias (one more term in the scores, ``Weights.relative_attention_bias``), and tensor names.

When only each sequence's first token is read (CLS pooling, sequence classification, multiple
choice), ``first_only`` runs the last block for those tokens alone: every token's keys and
values, but queries, attention output and feed-forward of the first token only. The same
numbers for it, a fraction of the last layer's work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from . import kernels
from .config import DistilBertConfig
from .numerics import (
    LOG2_E,
    Int8Array,
    LayerNorm,
    Linear,
    Matrix,
    Segments,
    attention,
    embedding_rows,
    layer_norm,
    linear,
    relu,
    widened,
)
from .positions import position_ids, relative_buckets

__all__ = [
    "Embeddings",
    "Block",
    "Weights",
    "ModelOutput",
    "MaskedLMHead",
    "SequenceClassificationHead",
    "TokenClassificationHead",
    "QuestionAnsweringHead",
    "Pooler",
    "relative_position_bias",
    "forward",
    "forward_packed",
]


# ---- weights ---------------------------------------------------------------------------------


class Embeddings(NamedTuple):
    word: Matrix  # [V, D] (stored small in int8 and float16 files)
    position: np.ndarray  # [P, D], learned or the fixed sinusoidal table
    norm: LayerNorm  # [D]
    token_type: np.ndarray | None = None  # [types, D], BERT's sentence A/B table; DistilBERT: None


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
    # [buckets, H]: MPNet's bias per head and distance bucket, shared by every layer
    # ("encoder.relative_attention_bias"); None in the other families.
    relative_attention_bias: np.ndarray | None = None


class ModelOutput(NamedTuple):
    """What ``DistilBertModel`` (or ``BertModel``) returns, with the same field names."""

    last_hidden_state: np.ndarray  # [B, T, D]
    hidden_states: tuple[np.ndarray, ...] | None = None  # n_layers + 1 of [B, T, D]
    attentions: tuple[np.ndarray, ...] | None = None  # n_layers of [B, H, T, T]
    pooler_output: np.ndarray | None = None  # [B, D], BERT checkpoints that have a pooler


# ---- the encoder -----------------------------------------------------------------------------
# Inside the encoder every token is a row of one [N, D] matrix: N = B * T for a padded batch, or
# the sum of the lengths when packed. Only attention looks across tokens, and it is told where
# each sequence lies (Segments); everything else works row by row. So the rows are cut into one
# part per core, each part runs every layer in a thread of its own, and the parts meet twice a
# layer, around the shared array that holds every token's keys and values (kernels.py).


class Tokens(NamedTuple):
    """A batch's tokens on one flat axis: what the encoder reads."""

    ids: np.ndarray  # [N] token ids
    positions: np.ndarray  # [N] row of the position table of each token (positions.py)
    token_types: np.ndarray | None  # [N] sentence A (0) or B (1), models with token types only
    segs: Segments  # where each sequence lies


class Scratch(NamedTuple):
    """Arrays the parts of one pass share: each part writes only its own rows."""

    qkv: np.ndarray  # [N, 3D] every token's q, k and v
    hidden_states: list[np.ndarray] | None  # n_layers + 1 of [N, D], when asked for
    attentions: list[np.ndarray] | None  # n_layers of [B, H, T, T], when asked for


def embed(
    ids: np.ndarray,
    positions: np.ndarray,
    token_types: np.ndarray | None,
    emb: Embeddings,
    eps: float,
) -> np.ndarray:  # [n] ids, positions and types -> [n, D]
    x = embedding_rows(emb.word, ids)  # [n] -> [n, D]: emb.word[ids], as float32
    added = emb.position[positions]  # [n] -> [n, D]
    if emb.token_type is not None:  # BERT: + the embedding of sentence A or B
        types = np.zeros_like(ids) if token_types is None else token_types
        added += emb.token_type[types]
    # = reference.embed, on rows of the flat token axis
    return layer_norm(x, emb.norm, eps, residual=added)  # LN(word + position (+ type))


def self_attention(
    x: np.ndarray,
    rows: slice,
    tokens: Tokens,
    scratch: Scratch,
    probs: np.ndarray | None,
    blk: Block,
    config: DistilBertConfig,
    sync: Callable[[], object],
    first_only: bool = False,
) -> np.ndarray:  # [n, D] -> [n, D], the n tokens of ``rows`` (first_only: [m, D], see block)
    sync()  # every part is done with the previous layer's keys and values
    # [n, D] -> [n, 3D]: q, k, v side by side, one product for the three of reference.attention
    linear(x, blk.qkv, out=scratch.qkv[rows])
    sync()  # every part has written its tokens' keys and values: attention reads them all
    # softmax(q k^T / sqrt(Dh) + bias) v, for each head of each of these tokens, heads merged
    context = attention(
        scratch.qkv,
        tokens.segs,
        config.n_heads,
        config.attention_scale,
        rows,
        probs,
        first_only=first_only,
    )  # [N, 3D] -> [n, D]
    return linear(context, blk.out)  # [n, D] -> [n, D]


# The feed-forward runs this many rows at a time, so its [n, F] activation never exists whole
# (row by row, the same as reference.feed_forward on all of them). 512 rows: a 32x128 batch
# peaks at 321 MB instead of 335 MB with 768, at the same speed (measured paired, 2 cores).
_FFN_ROWS = 512


def feed_forward(h: np.ndarray, blk: Block, config: DistilBertConfig) -> np.ndarray:  # [n, D]
    if len(h) <= _FFN_ROWS:
        f = linear(h, blk.ffn_in, activation=config.activation)  # [n, D] -> [n, F]
        return linear(f, blk.ffn_out)  # [n, F] -> [n, D]
    out = np.empty_like(h)
    # A small-weights file's matrices are widened to float32 once here, not once per rows.
    ffn_in, ffn_out = widened(blk.ffn_in), widened(blk.ffn_out)
    for i in range(0, len(h), _FFN_ROWS):
        rows = slice(i, i + _FFN_ROWS)
        f = linear(h[rows], ffn_in, activation=config.activation)  # [r, D] -> [r, F]
        linear(f, ffn_out, out=out[rows])  # [r, F] -> [r, D]
    return out


def block(
    x: np.ndarray,
    rows: slice,
    tokens: Tokens,
    scratch: Scratch,
    probs: np.ndarray | None,
    blk: Block,
    config: DistilBertConfig,
    sync: Callable[[], object],
    first_only: bool = False,
) -> np.ndarray:  # [n, D] -> [n, D]; first_only: [m, D], the m sequences starting in rows
    """One post-LN block (= ``reference.block``). With ``first_only``, only the tokens that
    start a sequence come out: keys and values are still made for every token (the first
    token attends to all of them), the rest of the block only for the first tokens."""
    eps = config.layer_norm_eps
    attn = self_attention(x, rows, tokens, scratch, probs, blk, config, sync, first_only)
    if first_only:  # [n, D] -> [m, D]: the residual of the first tokens only
        x = x[tokens.segs.firsts_in(rows) - rows.start]
    h = layer_norm(attn, blk.attention_norm, eps, residual=x)  # post-LN: LN(x + attention(x))
    out = feed_forward(h, blk, config)
    return layer_norm(out, blk.output_norm, eps, residual=h)  # LN(h + ffn(h))


def encoder_part(
    rows: slice,
    tokens: Tokens,
    scratch: Scratch,
    weights: Weights,
    config: DistilBertConfig,
    sync: Callable[[], object],
    first_only: bool = False,
) -> np.ndarray:  # the n tokens of ``rows`` -> [n, D] (first_only: [m, D], see block)
    """One part of the tokens through the embeddings and every block, beside the other parts."""
    types = None if tokens.token_types is None else tokens.token_types[rows]
    x = embed(
        tokens.ids[rows], tokens.positions[rows], types, weights.embeddings, config.layer_norm_eps
    )
    if scratch.hidden_states is not None:
        scratch.hidden_states[0][rows] = x
    last = len(weights.blocks) - 1
    for i, blk in enumerate(weights.blocks):
        probs = None if scratch.attentions is None else scratch.attentions[i]
        x = block(x, rows, tokens, scratch, probs, blk, config, sync, first_only and i == last)
        if scratch.hidden_states is not None:
            scratch.hidden_states[i + 1][rows] = x
    return x


# ---- a short input on every core: products split by columns ------------------------------------
# At a few rows per part, cutting rows between cores does not pay: every core then re-packs every
# weight matrix for its few rows (OpenBLAS does, for each product), and packing, not arithmetic,
# is the work. So a short input runs differently: every part holds all the rows, and each
# product is split by its output columns, every part computing its columns for all the rows
# from its own slice of the weights. The parts meet after each product (four times a layer) to
# share the columns; the cheap row-wise work between products (attention of a few tokens,
# LayerNorm) each part does for all the rows itself, so it needs no meeting.


class Shared(NamedTuple):
    """The products' outputs, each part writing its own columns; and their inputs, part 0's."""

    x: np.ndarray  # [N, D], a block's input
    qkv: np.ndarray  # [N, 3D]
    context: np.ndarray  # [N, D], attention's heads merged
    h: np.ndarray  # [N, D], LN(x + attention(x))
    attention: np.ndarray  # [N, D], attention's output projection
    ffn: np.ndarray  # [N, F], GELU(h @ ffn_in)
    out: np.ndarray  # [N, D], the feed-forward's output


def column_slices(width: int, n_parts: int, align: int = 16) -> list[slice]:
    """Columns ``0..width-1`` in ``n_parts`` runs of about equal width, cut at multiples of
    ``align`` (whole vector registers) where the width allows.

    >>> column_slices(3072, 2), column_slices(20, 2)
    ([slice(0, 1536, None), slice(1536, 3072, None)], [slice(0, 16, None), slice(16, 20, None)])
    """
    cuts = [min(width, round(width * k / n_parts / align) * align) for k in range(n_parts + 1)]
    cuts[-1] = width
    return [slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def columns_of(
    x: np.ndarray,
    lin: Linear,
    part: int,
    n_parts: int,
    out: np.ndarray,
    activation: str | None = None,
) -> None:  # [N, in] -> this part's columns of out [N, out]
    """This part's columns of ``linear(x, lin, activation)``, from its slice of the weights
    (a view of a float32 matrix; a small-weights one is widened for those columns only)."""
    cols = column_slices(out.shape[1], n_parts)[part]
    w = lin.weight
    part_w = (
        Int8Array(w.values[:, cols], w.scale[:, cols]) if isinstance(w, Int8Array) else w[:, cols]
    )
    out[:, cols] = linear(x, Linear(part_w, lin.bias[cols]), activation=activation)


def encoder_columns(
    part: int,
    n_parts: int,
    tokens: Tokens,
    shared: Shared,
    scratch: Scratch,
    weights: Weights,
    config: DistilBertConfig,
    sync: Callable[[], object],
    first_only: bool = False,
) -> np.ndarray:  # [N] tokens -> [N, D] (first_only: [n_seq, D])
    """Every token through the encoder, this part computing its columns of every product: the
    same blocks as ``block`` (= ``reference.block``), the products cut the other way. The
    row-wise work between products (attention of a few tokens, LayerNorm) is part 0's alone:
    at a few rows, NumPy holds the interpreter lock through it, so parts doing it side by side
    would only take turns. With ``first_only``, the last block after q, k, v runs on the first
    rows of the shared arrays, one per sequence."""
    eps, first = config.layer_norm_eps, part == 0
    last = len(weights.blocks) - 1
    if first:
        shared.x[:] = embed(
            tokens.ids, tokens.positions, tokens.token_types, weights.embeddings, eps
        )
        if scratch.hidden_states is not None:
            scratch.hidden_states[0][:] = shared.x
    sync()
    n = len(tokens.ids)
    for i, blk in enumerate(weights.blocks):
        columns_of(shared.x, blk.qkv, part, n_parts, shared.qkv)  # [N, D] -> [N, 3D]
        sync()  # every part's q, k and v columns are in
        if first_only and i == last:  # from here on, one row per sequence: its first token
            starts = tokens.segs.starts()
            n = len(starts)
            if first:
                shared.x[:n] = shared.x[starts]  # [N, D] -> [n_seq, D], the residual
        if first:
            probs = None if scratch.attentions is None else scratch.attentions[i]
            shared.context[:n] = attention(
                shared.qkv,
                tokens.segs,
                config.n_heads,
                config.attention_scale,
                None,
                probs,
                first_only=first_only and i == last,
            )  # [N, 3D] -> [n, D]
        sync()
        x, h = shared.x[:n], shared.h[:n]
        columns_of(shared.context[:n], blk.out, part, n_parts, shared.attention[:n])
        sync()
        if first:  # post-LN: LN(x + attention(x))
            h[:] = layer_norm(shared.attention[:n], blk.attention_norm, eps, residual=x)
        sync()
        columns_of(h, blk.ffn_in, part, n_parts, shared.ffn[:n], config.activation)  # [n, F]
        sync()
        columns_of(shared.ffn[:n], blk.ffn_out, part, n_parts, shared.out[:n])  # [n, D]
        sync()
        if first:  # LN(h + ffn(h))
            x[:] = layer_norm(shared.out[:n], blk.output_norm, eps, residual=h)
            if scratch.hidden_states is not None:
                scratch.hidden_states[i + 1][:] = x
        sync()
    return shared.x[:n]


def _no_wait() -> None:
    pass


# A part gets at least this many tokens: below that, a thread costs more than it saves.
_MIN_PART_ROWS = 8
# Inputs of at most this many tokens split their products by columns (encoder_columns).
_COLUMN_ROWS = 64


def encoder(
    tokens: Tokens,
    costs: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    keep_hidden_states: bool = False,
    attention_shape: tuple[int, ...] | None = None,
    first_only: bool = False,
) -> tuple[np.ndarray, Scratch]:  # [N] tokens -> [N, D] (first_only: [n_seq, D])
    """Every token through the encoder, the rows cut into parts of about equal ``costs`` (one
    per core) run side by side. Returns the last hidden state (of each sequence's first token
    only, with ``first_only``) and the shared arrays."""
    n, d = len(tokens.ids), config.dim
    if weights.relative_attention_bias is not None:  # MPNet: one more term in every score
        longest = max(t for _, _, t in tokens.segs.runs)
        bias = relative_position_bias(weights.relative_attention_bias, longest, config)
        tokens = tokens._replace(segs=tokens.segs._replace(position_bias=bias))
    scratch = Scratch(
        qkv=np.empty((n, 3 * d), np.float32),
        hidden_states=[np.empty((n, d), np.float32) for _ in range(config.n_layers + 1)]
        if keep_hidden_states
        else None,
        attentions=[np.empty(attention_shape, np.float32) for _ in range(config.n_layers)]
        if attention_shape
        else None,
    )
    cores = kernels.n_threads()
    if cores > 1 and n <= _COLUMN_ROWS:  # a short input: every part all rows, some columns
        shared = Shared(
            x=np.empty((n, d), np.float32),
            qkv=np.empty((n, 3 * d), np.float32),
            context=np.empty((n, d), np.float32),
            h=np.empty((n, d), np.float32),
            attention=np.empty((n, d), np.float32),
            ffn=np.empty((n, config.hidden_dim), np.float32),
            out=np.empty((n, d), np.float32),
        )
        outs = kernels.run_together(
            lambda i, sync: encoder_columns(
                i, cores, tokens, shared, scratch, weights, config, sync, first_only
            ),
            cores,
        )
        return outs[0], scratch
    parts = kernels.split_rows(costs, cores, _MIN_PART_ROWS)
    whole = kernels.snap_rows(parts, costs, tokens.segs.starts())
    # Parts of whole sequences never read each other's keys: they need not wait for each other.
    work = (
        (lambda i, sync: encoder_part(parts[i], tokens, scratch, weights, config, sync, first_only))
        if whole is None
        else (
            lambda i, _: encoder_part(
                whole[i], tokens, scratch, weights, config, _no_wait, first_only
            )
        )
    )
    outs = kernels.run_together(work, len(parts))
    return (outs[0] if len(outs) == 1 else np.concatenate(outs)), scratch


def relative_position_bias(
    table: np.ndarray, n_tokens: int, config: DistilBertConfig
) -> np.ndarray:  # [buckets, H] -> [H, T keys, T queries]
    """MPNet's bias of every head for every key and query of a sequence of ``n_tokens``
    (= ``reference.relative_position_bias``, transposed), in the units of the fast attention's
    base-2 scores. It depends on distances only, so its top-left [t, t] corner serves every
    shorter sequence, and every sequence counts from 0 (transformers computes it from
    positions 0..T-1 of the padded batch: the same distances)."""
    buckets = relative_buckets(n_tokens, config.relative_attention_num_buckets)  # [Tq, Tk]
    bias = table[buckets.T] * np.float32(LOG2_E)  # [Tk, Tq] -> [Tk, Tq, H]
    return np.ascontiguousarray(bias.transpose(2, 0, 1), dtype=np.float32)  # [H, Tk, Tq]


# ---- entry points -----------------------------------------------------------------------------


def forward(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weights: Weights,
    config: DistilBertConfig,
    *,
    token_type_ids: np.ndarray | None = None,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
    first_only: bool = False,
) -> ModelOutput:  # [B, T] ids and mask -> [B, T, D] (first_only: [B, 1, D])
    """The encoder on a padded batch, as transformers' ``DistilBertModel`` (``BertModel``,
    ``RobertaModel``, ``MPNetModel``). Inputs are validated by the caller. With
    ``first_only``, ``last_hidden_state`` holds each sequence's first token only ([CLS],
    ``<s>``), computed exactly as in the full pass, with less work (no hidden states or
    attentions then)."""
    b, t = input_ids.shape
    if first_only and (output_hidden_states or output_attentions):
        raise ValueError("first_only runs part of the last layer: no hidden states or attentions")
    tokens = Tokens(
        ids=input_ids.reshape(-1),  # [B, T] -> [N]
        positions=position_ids(input_ids, config).reshape(-1),  # padding is on the right
        token_types=None if token_type_ids is None else token_type_ids.reshape(-1),
        segs=Segments.padded(attention_mask),  # B sequences of T tokens; padding keys masked
    )
    last, scratch = encoder(
        tokens,
        np.full(b * t, config.hidden_dim + t),  # every token costs the same (see forward_packed)
        weights,
        config,
        keep_hidden_states=output_hidden_states,
        attention_shape=(b, config.n_heads, t, t) if output_attentions else None,
        first_only=first_only,
    )
    hidden = scratch.hidden_states
    return ModelOutput(
        last_hidden_state=last.reshape(b, 1 if first_only else t, -1),  # [N, D] -> [B, T, D]
        hidden_states=None if hidden is None else tuple(h.reshape(b, t, -1) for h in hidden),
        attentions=None if scratch.attentions is None else tuple(scratch.attentions),
    )


def forward_packed(
    sequences: Sequence[np.ndarray],
    weights: Weights,
    config: DistilBertConfig,
    token_types: Sequence[np.ndarray] | None = None,
    first_only: bool = False,
) -> list[np.ndarray]:  # n_seq x [n_i] ids -> n_seq x [n_i, D] (first_only: [1, D])
    """The last hidden state of each sequence, as if each were run alone, without padding
    (= ``reference.forward`` on each sequence alone; tested).

    Each sequence is a 1-D array of token ids, special tokens included, at most
    ``max_position_embeddings`` long (``token_types``, if given, one array of 0 and 1 per
    sequence). All run as one batch of their tokens back to back, attention kept inside each
    sequence, so linear layers and norms see no padding at all: that is what makes mixed
    lengths cheap. Inputs are validated by the caller. The results are views into one [N, D]
    array. With ``first_only``, each result is its sequence's first token alone, [1, D]: the
    same numbers, the last layer run for those tokens only.
    """
    if not sequences:
        return []
    if first_only and min(len(s) for s in sequences) == 0:
        raise ValueError("first_only needs a first token in every sequence")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # equal lengths
    lengths = [len(sequences[i]) for i in order]  # side by side: attention takes them together
    tokens = Tokens(
        ids=np.concatenate([sequences[i] for i in order]),  # n_seq x [n_i] -> [N]
        positions=np.concatenate([position_ids(sequences[i], config) for i in order]),
        token_types=None
        if token_types is None
        else np.concatenate([token_types[i] for i in order]),
        segs=Segments.packed(lengths),
    )
    # A token's work, in whole numbers so that equal inputs are always cut alike: the linear
    # layers (about F multiply-adds per feature), and attention over its sequence's n keys.
    costs = np.repeat([config.hidden_dim + n for n in lengths], lengths)
    last, _ = encoder(tokens, costs, weights, config, first_only=first_only)
    kept = np.ones(len(lengths), np.int64) if first_only else lengths  # rows per sequence
    pieces = np.split(last, np.cumsum(kept)[:-1])  # [N, D] -> n_seq x [n_i, D], views
    return [pieces[k] for k in np.argsort(order)]  # back in the caller's order


# ---- task heads ------------------------------------------------------------------------------
# Every family's heads compute the same things from differently named tensors (layout.py maps
# them); the differences in the maths, the activation after the [CLS] projection of the
# sequence classifier and after the masked-LM head's transform, are fields.


class Pooler(NamedTuple):
    dense: Linear  # [D, D]  (BERT's "pooler.dense"; DistilBERT has no pooler)


class MaskedLMHead(NamedTuple):
    transform: Linear  # [D, D]  ("vocab_transform"; BERT "cls.predictions.transform.dense")
    norm: LayerNorm  # [D]  ("vocab_layer_norm"; BERT "cls.predictions.transform.LayerNorm")
    projector: Linear  # [D, V]  (weight tied to the word embeddings; BERT "cls.predictions")
    activation: str = "gelu"  # after transform: the config's; RoBERTa's and MPNet's: gelu


class SequenceClassificationHead(NamedTuple):
    # [D, D]  (DistilBERT "pre_classifier"; BERT the pooler's dense; RoBERTa and MPNet
    # "classifier.dense", their multiple choice the pooler's)
    pre_classifier: Linear
    classifier: Linear  # [D, L]  (RoBERTa's and MPNet's sequence head: "classifier.out_proj")
    activation: str = "relu"  # after pre_classifier: ReLU in DistilBERT, tanh in the others


class TokenClassificationHead(NamedTuple):
    classifier: Linear  # [D, L]


class QuestionAnsweringHead(NamedTuple):
    qa_outputs: Linear  # [D, 2]: start and end logits


def pooler_output(hidden: np.ndarray, pooler: Pooler) -> np.ndarray:  # [B, T, D] -> [B, D]
    """BERT's pooled output: tanh(dense([CLS]))."""
    return np.tanh(linear(hidden[:, 0], pooler.dense))  # the [CLS] token: [B, D]


def masked_lm_logits(
    hidden: np.ndarray, head: MaskedLMHead, config: DistilBertConfig
) -> np.ndarray:  # [B, T, D] -> [B, T, V]
    x = linear(hidden, head.transform, activation=head.activation)  # [B, T, D] -> [B, T, D]
    x = layer_norm(x, head.norm, config.layer_norm_eps)
    return linear(x, head.projector)  # [B, T, D] -> [B, T, V]


def sequence_classification_logits(
    hidden: np.ndarray, head: SequenceClassificationHead
) -> np.ndarray:  # [B, T, D] -> [B, L]
    pooled = linear(hidden[:, 0], head.pre_classifier)  # the [CLS] token: [B, D]
    pooled = np.tanh(pooled) if head.activation == "tanh" else relu(pooled)
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

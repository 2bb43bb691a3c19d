"""Embeddings as users want them: sentences, word pieces and words, for texts of any length.

A text is tokenized once, in full. One that fits in the model's window runs in one pass; a
longer one is cut into overlapping windows and every token keeps the vector of the window where
it has the most context on both sides, so the token sequence is complete and in order. Pieces
of all texts are sorted by length and batched, so padding stays small, and results are put back
in input order.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple

import numpy as np

from .errors import InputError, InputTypeError, TextTooLongError
from .tokenizer import Tokenizer, Tokens, check_texts

__all__ = [
    "TokenEmbeddings",
    "WordEmbeddings",
    "encode",
    "iter_encode",
    "plan_windows",
]

OutputValue = Literal["sentence_embedding", "token_embeddings", "word_embeddings"]
Pooling = Literal["mean", "cls", "max"]
LongText = Literal["window", "truncate", "error"]
WordPooling = Literal["first", "mean", "max"]
# n sequences of token ids (special tokens included) -> their last hidden states [n_i, D]
Encoder = Callable[[list[np.ndarray]], list[np.ndarray]]


class TokenEmbeddings(NamedTuple):
    """One text's word-piece vectors."""

    vectors: np.ndarray  # [n, D]
    tokens: list[str]  # n token strings
    offsets: np.ndarray  # [n, 2] character offsets into the text; (0, 0) for special tokens
    word_ids: np.ndarray  # [n] word index of each piece; -1 for special tokens


class WordEmbeddings(NamedTuple):
    """One text's word vectors: one per word, aggregated from its word pieces."""

    vectors: np.ndarray  # [w, D]
    words: list[str]  # the words as they appear in the text
    offsets: np.ndarray  # [w, 2] character offsets into the text


def plan_windows(n: int, room: int, stride: int) -> tuple[list[int], np.ndarray]:
    """Window starts for ``n`` content tokens, ``room`` per window, ``stride`` shared between
    neighbours; and for every token, the window it takes its vector from.

    Windows step by ``room - stride``; the last one is moved back to end at the last token, so
    every window is full. A token takes the window where its nearer edge is farthest away.

    >>> plan_windows(10, 4, 2)
    ([0, 2, 4, 6], array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3]))
    """
    if n <= room:
        return [0], np.zeros(n, dtype=np.int64)
    step = room - stride
    starts = list(range(0, n - room, step)) + [n - room]
    best = np.full(n, -1, dtype=np.int64)
    owner = np.zeros(n, dtype=np.int64)
    for k, s in enumerate(starts):
        pos = np.arange(s, s + room)
        context = np.minimum(pos - s, s + room - 1 - pos)  # tokens seen on the poorer side
        take = context > best[pos]
        best[pos[take]] = context[take]
        owner[pos[take]] = k
    return starts, owner


def _check_options(
    output_value: str, pooling: str, long_text: str, word_pooling: str, batch_size: int
) -> None:
    for name, value, allowed in (
        ("output_value", output_value, OutputValue.__args__),  # type: ignore[attr-defined]
        ("pooling", pooling, Pooling.__args__),  # type: ignore[attr-defined]
        ("long_text", long_text, LongText.__args__),  # type: ignore[attr-defined]
        ("word_pooling", word_pooling, WordPooling.__args__),  # type: ignore[attr-defined]
    ):
        if value not in allowed:
            raise InputError(f"{name} must be one of {allowed}, got {value!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")


def encode(
    texts: Iterable[str] | str,
    tokenizer: Tokenizer,
    run: Encoder,
    *,
    batch_size: int = 32,
    output_value: OutputValue = "sentence_embedding",
    pooling: Pooling = "mean",
    normalize_embeddings: bool = False,
    long_text: LongText = "window",
    window: int | None = None,
    stride: int | None = None,
    word_pooling: WordPooling = "first",
    include_special_tokens: bool = False,
    show_progress_bar: bool = False,
) -> np.ndarray | list[TokenEmbeddings] | list[WordEmbeddings]:
    """Embed texts; see ``DistilBert.encode`` for the options."""
    _check_options(output_value, pooling, long_text, word_pooling, batch_size)
    texts = check_texts(texts)
    room, stride = _room_and_stride(tokenizer, window, stride)
    pieces_of = tokenizer.tokenize(texts, limit=None if long_text == "window" else room)
    _apply_long_text_policy(pieces_of, room, long_text, tokenizer)
    if long_text == "window":
        plans = [plan_windows(len(t.ids), room, stride) for t in pieces_of]
    else:  # one window per text: its first `room` tokens
        plans = [([0], np.zeros(min(len(t.ids), room), np.int64)) for t in pieces_of]
    pieces = [  # the content ids of every window of every text, text by text, in order
        t.ids[s : s + room] for t, (starts, _) in zip(pieces_of, plans, strict=True) for s in starts
    ]
    vectors = iter(_run_pieces(pieces, tokenizer, run, batch_size, show_progress_bar))
    results = []  # per text: [specials + tokens, D], pieces being grouped by text, in order
    for starts, owner in plans:
        windows = [(s, next(vectors)) for s in starts]
        results.append(_stitch(windows, starts, owner, room, tokenizer))
    if output_value == "sentence_embedding":
        return _sentences(results, pooling, normalize_embeddings)
    tokens = [
        _token_embeddings(seq, toks, tokenizer, include_special_tokens)
        for seq, toks in zip(results, pieces_of, strict=True)
    ]
    if output_value == "token_embeddings":
        return tokens
    return [_words(t, text, word_pooling) for t, text in zip(tokens, texts, strict=True)]


def iter_encode(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    run: Encoder,
    *,
    chunk_size: int = 4096,
    **options: object,
) -> Iterator[np.ndarray | list[TokenEmbeddings] | list[WordEmbeddings]]:
    """``encode`` over an iterable of any length, ``chunk_size`` texts at a time: yields each
    chunk's results in input order, holding only one chunk in memory."""
    if chunk_size < 1:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    iterator = iter(texts)
    offset = 0
    while chunk := list(itertools.islice(iterator, chunk_size)):
        try:
            yield encode(chunk, tokenizer, run, **options)  # type: ignore[arg-type]
        except (InputError, InputTypeError) as exc:  # name the text by its stream index
            raise type(exc)(_shift_index(str(exc), offset)) from None
        offset += len(chunk)


def _shift_index(message: str, offset: int) -> str:
    head, sep, rest = message.partition("text ")
    number = "".join(itertools.takewhile(str.isdigit, rest))
    if not sep or not number:
        return message
    return f"{head}text {int(number) + offset}{rest[len(number) :]}"


# ---- steps ------------------------------------------------------------------------------------


def _room_and_stride(tok: Tokenizer, window: int | None, stride: int | None) -> tuple[int, int]:
    window = window or tok.max_length
    if window > tok.max_length:
        raise InputError(f"window {window} is larger than the model's {tok.max_length} positions")
    room = window - tok.n_special
    if room < 2:
        raise InputError(f"window {window} leaves no room for text tokens")
    stride = room // 4 if stride is None else stride  # e.g. 127 of 510 shared by neighbours
    if not 0 <= stride < room:
        raise InputError(f"stride must be in [0, {room}) for window {window}, got {stride}")
    return room, stride


def _apply_long_text_policy(
    pieces_of: list[Tokens], room: int, long_text: str, tok: Tokenizer
) -> None:
    long = [i for i, t in enumerate(pieces_of) if len(t.ids) > room]
    if not long:
        return
    window = room + tok.n_special
    if long_text == "error":
        raise TextTooLongError(
            f"text {long[0]} has more tokens than the window of {window} (long_text='error'); "
            "use long_text='window' or 'truncate'"
        )
    if long_text == "truncate":
        warnings.warn(
            f"{len(long)} text(s) longer than {window} tokens were truncated to their first "
            f"{window} (first: text {long[0]})",
            stacklevel=4,
        )


def _run_pieces(
    pieces: list[np.ndarray], tok: Tokenizer, run: Encoder, batch_size: int, progress: bool
) -> list[np.ndarray]:
    """Every piece's hidden states [specials + n, D], run ``batch_size`` at a time in order of
    length, so that each batch holds pieces of about the same length."""
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j]))
    out: list[np.ndarray] = [np.empty(0)] * len(pieces)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="npdistil", unit="batch")
    for batch in batches:
        sequences = [np.concatenate([tok.prefix_ids, pieces[j], tok.suffix_ids]) for j in batch]
        for j, hidden in zip(batch, run(sequences), strict=True):
            out[j] = hidden
    return out


def _stitch(
    windows: list[tuple[int, np.ndarray]],
    starts: list[int],
    owner: np.ndarray,
    room: int,
    tok: Tokenizer,
) -> np.ndarray:  # [specials + room, D] per window -> [specials + n, D]
    """One text's vectors: its prefix specials from the first window, each content token from
    the window that owns it, the suffix specials from the last window."""
    n_pre, n = len(tok.prefix_ids), len(owner)
    if len(windows) == 1:
        return windows[0][1]
    by_start = dict(windows)
    first, last = by_start[starts[0]], by_start[starts[-1]]
    d = first.shape[-1]
    seq = np.empty((n + tok.n_special, d), dtype=first.dtype)
    seq[:n_pre] = first[:n_pre]
    for k, s in enumerate(starts):
        pos = np.flatnonzero(owner == k)  # content positions owned by window k
        seq[n_pre + pos] = by_start[s][n_pre + pos - s]
    seq[n_pre + n :] = last[n_pre + room :]
    return seq


def _sentences(seqs: list[np.ndarray], pooling: str, normalize: bool) -> np.ndarray:
    if pooling == "mean":
        out = np.stack([s.mean(axis=0) for s in seqs])
    elif pooling == "max":
        out = np.stack([s.max(axis=0) for s in seqs])
    else:
        out = np.stack([s[0] for s in seqs])
    out = out.astype(np.float32, copy=False)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
    return out


def _token_embeddings(
    seq: np.ndarray, toks: Tokens, tok: Tokenizer, include_special: bool
) -> TokenEmbeddings:
    n_pre, n_suf = len(tok.prefix_ids), len(tok.suffix_ids)
    n = seq.shape[0] - n_pre - n_suf  # content tokens kept (fewer than toks when truncated)
    content = TokenEmbeddings(
        seq[n_pre : n_pre + n], toks.tokens[:n], toks.offsets[:n], toks.word_ids[:n]
    )
    if not include_special:
        return TokenEmbeddings(content.vectors.copy(), *content[1:])
    zeros = np.zeros((1, 2), dtype=np.int64)
    return TokenEmbeddings(
        vectors=seq.copy(),
        tokens=[*tok.prefix_tokens, *content.tokens, *tok.suffix_tokens],
        offsets=np.concatenate(
            [np.repeat(zeros, n_pre, 0), content.offsets, np.repeat(zeros, n_suf, 0)]
        ),
        word_ids=np.concatenate([np.full(n_pre, -1), content.word_ids, np.full(n_suf, -1)]),
    )


def _words(t: TokenEmbeddings, text: str, how: str) -> WordEmbeddings:
    keep = t.word_ids >= 0
    word_ids, vectors, offsets = t.word_ids[keep], t.vectors[keep], t.offsets[keep]
    if not len(word_ids):
        return WordEmbeddings(
            np.zeros((0, t.vectors.shape[1]), np.float32), [], np.zeros((0, 2), np.int64)
        )
    # Pieces of a word are consecutive: a new word starts wherever the word id changes.
    starts = np.flatnonzero(np.r_[True, word_ids[1:] != word_ids[:-1]])
    if how == "first":
        pooled = vectors[starts]
    elif how == "mean":
        pooled = np.add.reduceat(vectors, starts, axis=0)
        pooled /= np.diff(np.r_[starts, len(word_ids)])[:, None]
    else:
        pooled = np.maximum.reduceat(vectors, starts, axis=0)
    ends = np.r_[starts[1:], len(word_ids)] - 1
    spans = np.stack([offsets[starts, 0], offsets[ends, 1]], axis=1)
    return WordEmbeddings(
        pooled.astype(np.float32, copy=False), [text[a:b] for a, b in spans], spans
    )

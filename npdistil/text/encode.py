"""Embeddings as users want them: sentences, word pieces and words, for texts of any length.

A text is tokenized once, in full. One that fits in the model's window runs in one pass; a
longer one is cut into overlapping windows and every token keeps the vector of the window where
it has the most context on both sides, so the token sequence is complete and in order. Pieces
of all texts are sorted by length and batched, so padding stays small, and results are put back
in input order.

A sentence-transformers model encodes as its folder says (sentence.py): its pooling, Dense and
Normalize modules, prompts, and truncation at its ``max_seq_length`` instead of windows; every
option given overrides.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, NamedTuple

import numpy as np

from ..errors import InputError, InputTypeError, TextTooLongError
from .sentence import PLAIN, SentenceModel, l2_normalize, pool, run_modules
from .tokenizer import Tokenizer, Tokens, check_texts
from .vectors import quantize_embeddings

__all__ = [
    "TokenEmbeddings",
    "WordEmbeddings",
    "encode",
    "iter_encode",
    "plan_windows",
]

# "token_embeddings" is sentence-transformers' (each text's vectors, [CLS] and [SEP] included);
# "tokens" adds each token's string, offsets and word id.
OutputValue = Literal["sentence_embedding", "token_embeddings", "tokens", "word_embeddings"]
Pooling = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
LongText = Literal["window", "truncate", "error"]
WordPooling = Literal["first", "mean", "max"]
Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
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
    output_value: str,
    pooling: str | None,
    long_text: str | None,
    word_pooling: str,
    precision: str,
    batch_size: int,
    truncate_dim: int | None,
) -> None:
    for name, value, allowed in (
        ("output_value", output_value, OutputValue.__args__),  # type: ignore[attr-defined]
        ("pooling", pooling, (None, *Pooling.__args__)),  # type: ignore[attr-defined]
        ("long_text", long_text, (None, *LongText.__args__)),  # type: ignore[attr-defined]
        ("word_pooling", word_pooling, WordPooling.__args__),  # type: ignore[attr-defined]
        ("precision", precision, Precision.__args__),  # type: ignore[attr-defined]
    ):
        if value not in allowed:
            raise InputError(f"{name} must be one of {allowed}, got {value!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if truncate_dim is not None and (not isinstance(truncate_dim, int) or truncate_dim < 1):
        raise InputError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
    if precision != "float32" and output_value != "sentence_embedding":
        raise InputError(f"precision {precision!r} applies to sentence embeddings only")


def _check_numpy_only(convert_to_tensor: bool, device: object) -> None:
    if convert_to_tensor:
        raise InputError(
            "convert_to_tensor=True: npdistil returns NumPy arrays and has no torch; "
            "use torch.from_numpy(...) on the result if you need a tensor"
        )
    if device not in (None, "cpu"):
        raise InputError(f"device={device!r}: npdistil runs on the CPU only (device='cpu' or None)")


def _resolve_prompt(
    sentence: SentenceModel, prompt: str | None, prompt_name: str | None
) -> str | None:
    """The prompt text to put before every text, as sentence-transformers resolves it: an
    explicit ``prompt``, else the named one, else the model's default (if any)."""
    if prompt is not None:
        if prompt_name is not None:
            warnings.warn("both prompt and prompt_name given: using prompt", stacklevel=4)
        return prompt
    name = prompt_name if prompt_name is not None else sentence.default_prompt_name
    if name is None:
        return None
    if name not in sentence.prompts:
        raise InputError(
            f"prompt_name {name!r} is not one of the model's prompts {list(sentence.prompts)}"
        )
    return sentence.prompts[name]


def encode(
    texts: Iterable[str] | str,
    tokenizer: Tokenizer,
    run: Encoder,
    *,
    sentence: SentenceModel = PLAIN,
    max_seq_length: int | None = None,
    batch_size: int = 32,
    output_value: OutputValue = "sentence_embedding",
    pooling: Pooling | None = None,
    normalize_embeddings: bool = False,
    prompt: str | None = None,
    prompt_name: str | None = None,
    precision: Precision = "float32",
    truncate_dim: int | None = None,
    long_text: LongText | None = None,
    window: int | None = None,
    stride: int | None = None,
    word_pooling: WordPooling = "first",
    include_special_tokens: bool = False,
    show_progress_bar: bool = False,
    convert_to_numpy: bool = True,
    convert_to_tensor: bool = False,
    device: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    run_first: Encoder | None = None,
) -> Any:
    """Embed texts; see ``Model.encode`` for the options. ``sentence`` is the model's
    sentence-transformers modules; ``max_seq_length``, when set, truncates texts there by
    default, as sentence-transformers does. ``on_batch(done, total)`` is called as each batch
    finishes, with the pieces (texts, or windows of long texts) done so far and in all: for a
    progress display. ``run_first``, if given, is ``run`` for the first token only ([1, D] per
    sequence, the same numbers for less work): used when CLS pooling reads nothing else."""
    truncate_dim = truncate_dim if truncate_dim is not None else sentence.truncate_dim
    _check_options(
        output_value, pooling, long_text, word_pooling, precision, batch_size, truncate_dim
    )
    _check_numpy_only(convert_to_tensor, device)
    single = isinstance(texts, str)
    texts = check_texts(texts)

    rich = output_value in ("tokens", "word_embeddings")  # offsets into the texts as given
    if rich and (prompt or prompt_name):
        raise InputError(f"prompts apply to sentence and token embeddings, not {output_value!r}")
    text_prompt = None if rich else _resolve_prompt(sentence, prompt, prompt_name)
    skip = 0  # leading tokens pooling leaves out: a prompt and its [CLS], if the model says so
    if text_prompt:  # as sentence-transformers: the prompt's own tokens, then the text's
        if not sentence.pooling.include_prompt:
            skip = len(tokenizer.prefix_ids) + len(tokenizer.tokenize(text_prompt)[0].ids)
        texts = [text_prompt + t for t in texts]

    # A sentence-transformers model truncates at its max_seq_length (quietly, as it does);
    # otherwise long texts run in windows of the model's positions.
    quiet = long_text is None and max_seq_length is not None
    long_text = long_text or ("truncate" if max_seq_length is not None else "window")
    window = window or max_seq_length
    keep = None  # what is kept of each text's hidden states as they arrive
    modes = (pooling,) if pooling else sentence.pooling.modes
    if output_value == "sentence_embedding":  # its pooled vector: [n, D] -> [D * len(modes)]
        keep = lambda seq: pool([seq], modes, skip)[0]  # noqa: E731
    # CLS pooling reads each text's first token alone: only it goes through the last layer,
    # and of a long text only the first window, the one its [CLS] comes from.
    cls_only = output_value == "sentence_embedding" and tuple(modes) == ("cls",) and not skip
    results, pieces_of = _hidden_states(
        texts,
        tokenizer,
        run_first if cls_only and run_first is not None else run,
        long_text,
        window,
        stride,
        batch_size,
        show_progress_bar,
        quiet,
        on_batch,
        keep,
        first_window_only=cls_only and run_first is not None,
    )

    out: Any
    if output_value == "sentence_embedding":
        x = run_modules(np.stack(results), sentence.modules[1:])  # [N, E]
        if truncate_dim is not None:
            x = x[:, :truncate_dim]
        if normalize_embeddings:
            x = l2_normalize(x)
        out = quantize_embeddings(x, precision) if precision != "float32" else x
        if not convert_to_numpy:  # sentence-transformers gives a list of vectors then
            out = list(out)
    elif output_value == "token_embeddings":
        out = [np.array(seq, dtype=np.float32) for seq in results]  # copies: own memory
    else:
        tokens = [
            _token_embeddings(seq, toks, tokenizer, include_special_tokens)
            for seq, toks in zip(results, pieces_of, strict=True)
        ]
        if output_value == "tokens":
            out = tokens
        else:
            out = [_words(t, text, word_pooling) for t, text in zip(tokens, texts, strict=True)]
    return out[0] if single else out


def _hidden_states(
    texts: list[str],
    tokenizer: Tokenizer,
    run: Encoder,
    long_text: str,
    window: int | None,
    stride: int | None,
    batch_size: int,
    progress: bool,
    quiet: bool,
    on_batch: Callable[[int, int], None] | None = None,
    keep: Callable[[np.ndarray], np.ndarray] | None = None,
    first_window_only: bool = False,
) -> tuple[list[np.ndarray], list[Tokens]]:
    """Every text's last hidden states [specials + n, D] (in windows, or truncated), or what
    ``keep`` makes of them, and its word pieces.

    ``keep`` (a sentence's pooling) is applied to each text as soon as all of it has run, so
    that only what is kept stays in memory, not every token's vector of every text. With
    ``first_window_only``, a long text runs its first window only (whatever ``long_text``
    says, once it has had its say: an error, or a warning)."""
    room, stride = _room_and_stride(tokenizer, window, stride)
    whole = long_text == "window" and not first_window_only
    pieces_of = tokenizer.tokenize(texts, limit=None if whole else room)
    _apply_long_text_policy(pieces_of, room, long_text, tokenizer, quiet)
    if whole:
        plans = [plan_windows(len(t.ids), room, stride) for t in pieces_of]
    else:  # one window per text: its first `room` tokens
        plans = [([0], np.zeros(min(len(t.ids), room), np.int64)) for t in pieces_of]
    pieces = [  # the content ids of every window of every text, text by text, in order
        t.ids[s : s + room] for t, (starts, _) in zip(pieces_of, plans, strict=True) for s in starts
    ]
    text_of = [i for i, (starts, _) in enumerate(plans) for _ in starts]  # piece -> its text
    start_of = [s for starts, _ in plans for s in starts]  # piece -> its window's start
    kept = keep or (lambda seq: seq)
    results: list[np.ndarray] = [np.empty(0)] * len(texts)
    windows_of: dict[int, dict[int, np.ndarray]] = {}  # texts of several windows, until whole

    def take(j: int, hidden: np.ndarray) -> None:  # piece j's hidden states, as they arrive
        i = text_of[j]
        if len(plans[i][0]) == 1:
            results[i] = kept(hidden)
        else:  # a copy, so that its batch's array can go
            windows_of.setdefault(i, {})[start_of[j]] = np.array(hidden)

    _run_pieces(pieces, tokenizer, run, batch_size, progress, on_batch, take)
    for i, windows in windows_of.items():
        starts, owner = plans[i]
        seq = _stitch([(s, windows[s]) for s in starts], starts, owner, room, tokenizer)
        results[i] = kept(seq)
    return results, pieces_of


def iter_encode(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    run: Encoder,
    *,
    chunk_size: int = 4096,
    **options: Any,
) -> Iterator[Any]:
    """``encode`` over an iterable of any length, ``chunk_size`` texts at a time: yields each
    chunk's results in input order, holding only one chunk in memory."""
    if chunk_size < 1:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    iterator = iter(texts)
    offset = 0
    while chunk := list(itertools.islice(iterator, chunk_size)):
        try:
            yield encode(chunk, tokenizer, run, **options)
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
    pieces_of: list[Tokens], room: int, long_text: str, tok: Tokenizer, quiet: bool = False
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
    if long_text == "truncate" and not quiet:
        warnings.warn(
            f"{len(long)} text(s) longer than {window} tokens were truncated to their first "
            f"{window} (first: text {long[0]})",
            stacklevel=5,
        )


def _run_pieces(
    pieces: list[np.ndarray],
    tok: Tokenizer,
    run: Encoder,
    batch_size: int,
    progress: bool,
    on_batch: Callable[[int, int], None] | None,
    take: Callable[[int, np.ndarray], None],
) -> None:
    """Run every piece, ``batch_size`` at a time in order of length (so that each batch holds
    pieces of about the same length), giving ``take(j, hidden)`` the hidden states
    [specials + n, D] of piece j as its batch finishes."""
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    done = 0
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="npdistil", unit="batch")
    for batch in batches:
        sequences = [np.concatenate([tok.prefix_ids, pieces[j], tok.suffix_ids]) for j in batch]
        hidden = run(sequences)
        for k, j in enumerate(batch):
            take(j, hidden[k])
        del hidden  # this batch's [N, D] array can go now, not while the next batch runs
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(pieces))


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

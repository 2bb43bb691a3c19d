"""Named entities: what transformers' ``pipeline("token-classification")`` (alias "ner") gives,
from a token-classification head's logits.

The steps are the pipeline's, each a small function below:

1. every text is tokenized once; a text longer than the model's positions is cut to its first
   window (with a warning), or with ``stride`` tagged whole in overlapping windows, as the
   pipeline's ``stride`` option lays them out (tokenizers' overflowing tokens);
2. the windows run through the model ``batch_size`` at a time; a softmax gives each word piece
   its label probabilities;
3. each piece becomes a ``Piece`` (the pipeline's "pre-entity"): its token string, offsets, and
   whether it continues the word before it (word-aware tokenizers: the token string is longer
   than the text it covers, ``##ing`` for ``ing``);
4. aggregation: ``"none"`` tags every piece; ``"simple"`` tags every piece, then groups;
   ``"first"``, ``"average"``, ``"max"`` tag whole words (from their first piece's scores, the
   mean of their pieces' scores, or their surest piece's), then group. Grouping joins a tag
   with the ``I-`` tags of the same entity that follow it (``B-PER I-PER`` -> ``PER``), never
   two ``B-``; its score is the mean of its members';
5. ``ignore_labels`` are dropped, and the windows of a long text merged: where two entities
   overlap, the longer one stays (the likelier on a tie).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InputError, InputTypeError
from ..model import transformer as M
from ..text.tokenizer import Tokens, check_texts, overflow_windows
from .batches import TaskModel, check_positive, hidden_rows, in_batches
from .scores import softmax

__all__ = ["AggregationStrategy", "STRATEGIES", "entities"]

AggregationStrategy = Literal["none", "simple", "first", "average", "max"]
STRATEGIES: tuple[str, ...] = AggregationStrategy.__args__  # type: ignore[attr-defined]

Entity = dict[str, Any]  # the pipeline's keys: entity(_group), score, (index), word, start, end
Join = Callable[[list[str]], str]  # token strings -> text, as the tokenizer's decoder joins them


@dataclass(frozen=True)
class Piece:
    """One word piece of a window, as aggregation sees it (the pipeline's "pre-entity")."""

    word: str  # its token string ("##ing"); for an unknown token, the text it stands for
    scores: np.ndarray  # [L] label probabilities
    start: int  # character offsets into the text: text[start:end]
    end: int
    index: int  # position in the window's input_ids ([CLS] is 0)
    is_subword: bool  # continues the word of the piece before it


def entities(
    model: TaskModel,
    texts: str | Iterable[str],
    *,
    aggregation_strategy: AggregationStrategy = "simple",
    ignore_labels: Iterable[str] = ("O",),
    stride: int | None = None,
    batch_size: int = 32,
) -> list[Entity] | list[list[Entity]]:
    """The entities (or tagged tokens) of each text, as transformers'
    ``pipeline("token-classification", model=...)(texts, aggregation_strategy=...,
    ignore_labels=..., stride=...)``: one str gives one list, a list of texts a list of lists.

    - ``aggregation_strategy`` ``"none"`` gives every word piece's tag: dicts with ``entity,
      score, index, word, start, end`` (``index``: the piece's position in the input ids,
      [CLS] at 0); ``"simple"`` (the default here; the pipeline's is "none"), ``"first"``,
      ``"average"``, ``"max"`` give grouped entities: ``entity_group, score, word, start,
      end``. ``start``/``end`` are character offsets (``text[start:end]``); ``word`` is the
      tokens joined back (for the exact text, slice it); ``score`` a Python float.
    - ``ignore_labels``: tags (``"none"``) or groups (the others) left out; pass ``()`` to keep
      every one.
    - Texts longer than the model's positions (minus [CLS] and [SEP]) are truncated, with a
      warning, as the pipeline truncates them (silently). With ``stride`` (not with "none", as
      in the pipeline) they are tagged whole, in windows of the model's positions that share
      ``stride`` pieces with the next one; overlapping entities of two windows are merged.
    - ``batch_size`` windows run per forward pass.

    >>> from npdistil import load
    >>> model = load("tests/fixtures/tiny-tokcls")  # random weights: random tags
    >>> entities(model, "Hello world!", aggregation_strategy="first")[0]
    {'entity_group': 'PER', 'score': 0.47..., 'word': 'Hello', 'start': 0, 'end': 5}
    """
    single = isinstance(texts, str)
    texts = check_texts(texts)
    tok = model.tokenizer
    room = tok.max_length - tok.n_special  # pieces a window holds
    strategy = _check_options(aggregation_strategy, ignore_labels, stride, batch_size, room)
    ignore = {ignore_labels} if isinstance(ignore_labels, str) else set(ignore_labels)

    pieces = tok.tokenize(texts, limit=None if stride is not None else room)
    _warn_truncated(pieces, room, stride, tok.max_length)
    windows = [
        (t, _cut(p, s, e))
        for t, p in enumerate(pieces)
        for s, e in _windows(len(p.ids), room, stride)
    ]
    probs = _probabilities(model, [w for _, w in windows], batch_size)

    first, prefix = len(tok.prefix_ids), tok.continuing_subword_prefix
    labels, join = model.config.id2label, tok.convert_tokens_to_string
    key = "entity" if strategy == "none" else "entity_group"
    found: list[list[list[Entity]]] = [[] for _ in texts]  # per text, per window
    for (t, window), p in zip(windows, probs, strict=True):
        pre = pre_entities(texts[t], window, p, first, tok.unk_token_id, prefix)
        found[t].append([x for x in aggregate(pre, strategy, labels, join) if x[key] not in ignore])
    out = [w[0] if len(w) == 1 else merge_overlaps([x for f in w for x in f]) for w in found]
    return out[0] if single else out


# ---- options and windows ----------------------------------------------------------------------


def _check_options(
    aggregation_strategy: object,
    ignore_labels: object,
    stride: object,
    batch_size: object,
    room: int,
) -> str:
    """The aggregation strategy (lower case, as the pipeline accepts "SIMPLE"), or an
    InputError naming the bad option."""
    strategy = aggregation_strategy.lower() if isinstance(aggregation_strategy, str) else None
    if strategy not in STRATEGIES:
        raise InputError(
            f"aggregation_strategy must be one of {', '.join(map(repr, STRATEGIES))}; "
            f"got {aggregation_strategy!r}"
        )
    if not isinstance(ignore_labels, (str, Iterable)):
        raise InputTypeError(
            f"ignore_labels must be labels (a list of str), got {type(ignore_labels).__name__}"
        )
    if stride is not None:
        if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < room:
            raise InputError(
                f"stride must be an integer in [0, {room}) (tokens shared by neighbouring "
                f"windows of {room}), got {stride!r}"
            )
        if strategy == "none":
            raise InputError(
                'stride tags long texts in windows, which aggregation_strategy="none" cannot '
                "merge (as in transformers): choose another strategy"
            )
    check_positive("batch_size", batch_size)
    return strategy


def _windows(n: int, room: int, stride: int | None) -> list[tuple[int, int]]:
    """The pieces ``[start, stop)`` of each window: with a stride, overlapping windows over
    the whole text (the pipeline's ``stride``); without, its first ``room`` only."""
    if stride is None:
        return [(0, min(n, room))]
    return overflow_windows(n, room, stride)


def _warn_truncated(pieces: list[Tokens], room: int, stride: int | None, max_length: int) -> None:
    long = [i for i, p in enumerate(pieces) if len(p.ids) > room]
    if long and stride is None:
        warnings.warn(
            f"{len(long)} text(s) longer than {max_length} tokens were truncated (first: text "
            f"{long[0]}); pass stride=... to tag them whole, in overlapping windows",
            stacklevel=4,
        )


def _cut(p: Tokens, start: int, end: int) -> Tokens:
    return Tokens(
        p.ids[start:end], p.offsets[start:end], p.word_ids[start:end], p.tokens[start:end]
    )


def _probabilities(model: TaskModel, windows: list[Tokens], batch_size: int) -> list[np.ndarray]:
    """Label probabilities of each window's pieces, [n, L] each: ``batch_size`` windows per
    forward pass, similar lengths together, packed (no padding)."""
    tok = model.tokenizer
    head = model.head("token_classification")
    first = len(tok.prefix_ids)  # [CLS]
    order = sorted(range(len(windows)), key=lambda k: len(windows[k].ids))
    out: list[np.ndarray] = [np.empty(0)] * len(windows)
    for _, chunk in in_batches(order, batch_size):
        hidden = hidden_rows(model, tok.pad([windows[k] for k in chunk]))  # B x [n_i, D]
        for h, k in zip(hidden, chunk, strict=True):
            pieces = h[first : first + len(windows[k].ids)]  # without [CLS], [SEP]: [n, D]
            out[k] = softmax(M.token_classification_logits(pieces, head))  # [n, L]
    return out


# ---- from pieces to entities ------------------------------------------------------------------


def pre_entities(
    text: str,
    window: Tokens,
    probs: np.ndarray,  # [n, L]
    first_index: int,
    unk_id: int | None,  # None: the vocabulary has no unknown token
    subword_prefix: str | None,
) -> list[Piece]:
    """A window's pieces with what aggregation needs. A piece continues a word when its token
    string is not the text it covers (``##ing``: the tokenizer marks continuations); for a
    tokenizer without such marks, when no space comes before it (the pipeline's fallback). An
    unknown token starts a word and shows the text it stands for, not ``[UNK]``."""
    out = []
    for k, (token, (start, end)) in enumerate(
        zip(window.tokens, window.offsets.tolist(), strict=True)
    ):
        covered = text[start:end]
        if window.ids[k] == unk_id:
            word, is_subword = covered, False
        elif subword_prefix is not None:
            word, is_subword = token, len(token) != len(covered)
        else:
            word, is_subword = token, start > 0 and " " not in text[start - 1 : start + 1]
        out.append(Piece(word, probs[k], start, end, first_index + k, is_subword))
    return out


def aggregate(
    pieces: list[Piece], strategy: str, labels: dict[int, str], join: Join
) -> list[Entity]:
    """Tagged pieces ("none"), or entity groups of tagged pieces ("simple") or words."""
    if strategy in ("none", "simple"):
        tagged = [
            _tag(p.scores, labels)
            | {"index": p.index, "word": p.word, "start": p.start, "end": p.end}
            for p in pieces
        ]
        return tagged if strategy == "none" else group_entities(tagged, join)
    return group_entities([tag_word(w, strategy, labels, join) for w in words(pieces)], join)


def words(pieces: list[Piece]) -> list[list[Piece]]:
    """Pieces gathered into words: a subword joins the word before it (the first piece of a
    window starts one, whatever it is)."""
    out: list[list[Piece]] = []
    for p in pieces:
        if out and p.is_subword:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def tag_word(word: list[Piece], strategy: str, labels: dict[int, str], join: Join) -> Entity:
    """One tag for a whole word: its first piece's ("first"), its surest piece's ("max", the
    first of equals), or its pieces' mean scores' ("average")."""
    if strategy == "first":
        scores = word[0].scores
    elif strategy == "max":
        scores = word[int(np.argmax([p.scores.max() for p in word]))].scores
    else:
        scores = np.mean([p.scores for p in word], axis=0)  # [L]
    span = {"word": join([p.word for p in word]), "start": word[0].start, "end": word[-1].end}
    return _tag(scores, labels) | span


def _tag(scores: np.ndarray, labels: dict[int, str]) -> Entity:
    k = int(scores.argmax())
    return {"entity": labels[k], "score": float(scores[k])}


def split_tag(label: str) -> tuple[str, str]:
    """A label's position mark and entity: ``"B-PER"`` -> ``("B", "PER")``; a label without
    ``B-``/``I-`` continues, as ``I-``.

    >>> split_tag("B-PER"), split_tag("I-LOC"), split_tag("O")
    (('B', 'PER'), ('I', 'LOC'), ('I', 'O'))
    """
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def group_entities(tagged: list[Entity], join: Join) -> list[Entity]:
    """Runs of tags of one entity, each starting a group unless it is an ``I-`` (or unmarked)
    tag of the entity of the group before: ``B-PER I-PER B-PER O`` -> ``PER PER O``. A group's
    score is its members' mean; its name the first member's label after the first ``-``."""
    groups: list[list[Entity]] = []
    for e in tagged:
        mark, entity = split_tag(e["entity"])
        if groups and mark != "B" and entity == split_tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(e)
        else:
            groups.append([e])
    return [
        {
            "entity_group": g[0]["entity"].split("-", 1)[-1],
            "score": float(np.mean([e["score"] for e in g])),
            "word": join([e["word"] for e in g]),
            "start": g[0]["start"],
            "end": g[-1]["end"],
        }
        for g in groups
    ]


def merge_overlaps(found: list[Entity]) -> list[Entity]:
    """Entities of a text's overlapping windows, in text order, each place tagged once: of two
    that overlap (the second starting inside the first), the longer stays, the likelier on a tie.

    >>> a, b = {"start": 0, "end": 5, "score": 0.5}, {"start": 2, "end": 5, "score": 0.9}
    >>> merge_overlaps([a, b, {"start": 6, "end": 7, "score": 0.1}])
    [{'start': 0, 'end': 5, 'score': 0.5}, {'start': 6, 'end': 7, 'score': 0.1}]
    """
    kept: list[Entity] = []
    for e in sorted(found, key=lambda e: e["start"]):
        last = kept[-1] if kept else None
        if last is None or not last["start"] <= e["start"] < last["end"]:
            kept.append(e)
            continue
        length, last_length = e["end"] - e["start"], last["end"] - last["start"]
        if length > last_length or (length == last_length and e["score"] > last["score"]):
            kept[-1] = e
    return kept

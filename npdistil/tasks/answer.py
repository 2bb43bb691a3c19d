"""Extractive question answering: the span of a context that answers a question.

What transformers' question-answering pipeline gives, from npdistil's question-answering head
and with the pipeline's definitions:

- Each question is paired with its context, ``[CLS] question [SEP] context [SEP]``; a context
  too long for ``max_seq_len`` is cut into windows sharing ``doc_stride`` tokens, and every
  window runs with the whole question (the windows of every pair run through the encoder
  ``batch_size`` at a time, packed).
- In each window, start and end logits become probabilities by a softmax over the context's
  tokens and [CLS]. A span (s, e) of the context scores p_start(s) * p_end(e), for
  s <= e < s + ``max_answer_len``. p_start([CLS]) * p_end([CLS]) is the "no answer" score;
  its lowest value over the windows competes with ``handle_impossible_answer``.
- Each window's best spans (``2 * top_k + 10`` of them, as the pipeline, since spans inside
  the same words give the same text) become character ranges of the context, widened to whole
  words (``align_to_words``). Spans of the same text (ignoring case) merge into the first one
  found, adding up their scores, as in the pipeline: a span that two overlapping windows both
  see, or a phrase that occurs twice, counts twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypedDict

import numpy as np

from ..errors import InputError
from ..model import transformer as M
from ..text.tokenizer import Tokenizer, Tokens, check_texts, overflow_windows
from .batches import BATCH_SIZE, TaskModel, check_positive, hidden_rows, in_batches
from .scores import softmax

__all__ = ["Answer", "answer", "best_spans"]

# The pipeline's defaults: answers of at most 15 tokens, pairs of at most 384 tokens (or the
# model's positions), neighbouring windows sharing half a window, at most 128 tokens.
MAX_ANSWER_LEN = 15
MAX_SEQ_LEN = 384
MAX_DOC_STRIDE = 128


class Answer(TypedDict):
    """One answer, with the keys (in the order) of transformers' question-answering pipeline."""

    score: float
    start: int  # character offsets into the context: context[start:end] == answer
    end: int
    answer: str


Result = Answer | list[Answer]  # one answer (top_k=1) or the top_k best, best first


class _Window(NamedTuple):
    """One window of a pair's context, as the model saw it."""

    start: int  # the context's tokens [start, stop) are in the window
    stop: int
    p_start: np.ndarray  # [stop - start] start probabilities of those tokens
    p_end: np.ndarray  # [stop - start] end probabilities
    null: float  # p_start([CLS]) * p_end([CLS]): the score of "no answer"


def answer(
    model: TaskModel,
    question: str | Sequence[str],
    context: str | Sequence[str],
    *,
    top_k: int = 1,
    max_answer_len: int = MAX_ANSWER_LEN,
    doc_stride: int | None = None,
    max_seq_len: int | None = None,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    batch_size: int = BATCH_SIZE,
) -> Result | list[Result]:
    """Answer ``question`` from ``context``, as transformers' question-answering pipeline:
    ``Model.answer`` documents the options and results.

    >>> import npdistil
    >>> model = npdistil.load("tests/fixtures/tiny-qa")  # random weights: arbitrary answers
    >>> [a["answer"] for a in answer(model, "Who?", "Ada wrote it in 1843.", top_k=2)]
    ['it in 1843', 'wrote it in 1843']
    """
    head = model.head("question_answering")  # the checkpoint's, or an error naming it
    questions, contexts, single = _pairs(question, context)
    counts = (("top_k", top_k), ("max_answer_len", max_answer_len), ("batch_size", batch_size))
    for name, value in counts:
        check_positive(name, value)
    tok = model.tokenizer
    max_seq_len = _max_seq_len(max_seq_len, model.config.max_tokens, tok)
    stride = min(max_seq_len // 2, MAX_DOC_STRIDE) if doc_stride is None else doc_stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride <= max_seq_len:
        raise InputError(f"doc_stride must be an integer in [0, {max_seq_len}], got {stride!r}")
    q_tokens, c_tokens = tok.tokenize(questions), tok.tokenize(contexts)
    ranges = [
        _ranges(i, len(q.ids), len(c.ids), max_seq_len, tok.n_special_pair, stride, doc_stride)
        for i, (q, c) in enumerate(zip(q_tokens, c_tokens, strict=True))
    ]
    rows = [(q_tokens[i], _slice(c_tokens[i], a, b)) for i, r in enumerate(ranges) for a, b in r]
    probabilities = iter(_probabilities(model, head, rows, batch_size))
    results: list[Result] = []
    for i, pair_ranges in enumerate(ranges):
        windows = [_Window(a, b, *next(probabilities)) for a, b in pair_ranges]
        found = _answers(contexts[i], c_tokens[i], windows, top_k, max_answer_len, align_to_words)
        if handle_impossible_answer:
            found.append(Answer(score=min(w.null for w in windows), start=0, end=0, answer=""))
        found.sort(key=lambda a: a["score"], reverse=True)  # stable: first found first
        results.append(found[0] if top_k == 1 else found[:top_k])
    return results[0] if single else results


def best_spans(
    p_start: np.ndarray, p_end: np.ndarray, k: int, max_answer_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # [n], [n] -> starts [k], ends [k], scores [k]
    """The ``k`` best spans (s, e) of ``n`` tokens, scored ``p_start[s] * p_end[e]``, for
    ``s <= e < s + max_answer_len``; best first, fewer when there are fewer spans.

    >>> best_spans(np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.6, 0.3]), 2, 2)
    (array([0, 1]), array([1, 1]), array([0.42, 0.12]))
    """
    n = len(p_start)
    scores = np.triu(np.tril(np.outer(p_start, p_end), max_answer_len - 1))  # [n, n]
    k = min(k, int(np.minimum(max_answer_len, np.arange(n, 0, -1)).sum()))  # spans there are
    flat = -scores.ravel()
    top = np.argpartition(flat, k - 1)[:k]  # the k best, in no order
    top = top[np.argsort(flat[top], kind="stable")]
    starts, ends = np.divmod(top, n)
    return starts, ends, scores[starts, ends]


# ---- inputs -------------------------------------------------------------------------------------


def _pairs(question: object, context: object) -> tuple[list[str], list[str], bool]:
    """Questions and contexts as two lists of the same length (a single str is paired with
    every text of the other list), and whether both were a single str."""
    questions, contexts = _texts("question", question), _texts("context", context)
    if isinstance(question, str) != isinstance(context, str):  # one for every other
        if isinstance(question, str):
            questions = questions * len(contexts)
        else:
            contexts = contexts * len(questions)
    if len(questions) != len(contexts):
        raise InputError(
            f"{len(questions)} questions but {len(contexts)} contexts: give one context per "
            "question, or one for all"
        )
    return questions, contexts, isinstance(question, str) and isinstance(context, str)


def _texts(name: str, value: object) -> list[str]:
    """Valid, non-empty texts (a question or context must say something)."""
    texts = check_texts(value, name)  # type: ignore[arg-type]
    for i, text in enumerate(texts):
        if not text:
            raise InputError(f"{name} {i} is empty")
    return texts


def _max_seq_len(value: int | None, positions: int, tok: Tokenizer) -> int:
    n_special = tok.n_special_pair
    if value is None:
        return min(MAX_SEQ_LEN, positions)
    if isinstance(value, bool) or not isinstance(value, int) or not n_special < value <= positions:
        raise InputError(
            f"max_seq_len must be an integer in [{n_special + 1}, {positions}] (the model's "
            f"positions), got {value!r}"
        )
    return value


def _ranges(
    i: int,
    n_question: int,
    n_context: int,
    max_seq_len: int,
    n_special: int,
    stride: int,
    doc_stride: int | None,
) -> list[tuple[int, int]]:
    """The context token ranges of pair ``i``'s windows: as many context tokens as fit beside
    the whole question. The default stride shrinks to fit a short window; a given one must."""
    room = max_seq_len - n_special - n_question
    if n_context == 0:
        raise InputError(f"context {i} has no tokens to answer from")
    if room < 1:
        raise InputError(
            f"question {i} has {n_question} tokens: with {n_special} special tokens it leaves "
            f"no room for context {i} in max_seq_len {max_seq_len}"
        )
    if n_context > room and stride >= room:
        if doc_stride is not None:
            raise InputError(
                f"doc_stride {doc_stride} is not less than the {room} context tokens that fit "
                f"beside question {i} in max_seq_len {max_seq_len}: context {i}'s windows "
                "would not move forward"
            )
        stride = room - 1
    return overflow_windows(n_context, room, stride)


def _slice(t: Tokens, start: int, stop: int) -> Tokens:
    return Tokens(
        t.ids[start:stop], t.offsets[start:stop], t.word_ids[start:stop], t.tokens[start:stop]
    )


# ---- the model ----------------------------------------------------------------------------------


def _probabilities(
    model: TaskModel,
    head: M.QuestionAnsweringHead,
    rows: list[tuple[Tokens, Tokens]],
    batch_size: int,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """For every (question, context window) row: the start and end probabilities of the
    window's context tokens, and the "no answer" score."""
    tok = model.tokenizer
    out = []
    for _, chunk in in_batches(rows, batch_size):
        batch = tok.pad([q for q, _ in chunk], [w for _, w in chunk])
        assert batch.sequence_ids is not None  # the tokenizer's batches have them
        for r, hidden in enumerate(hidden_rows(model, batch)):  # [n, D]
            start, end = M.question_answering_logits(hidden[None], head)  # [1, n] each
            n = len(hidden)
            ids, context = batch.input_ids[r, :n], batch.sequence_ids[r, :n] == 1
            # The pipeline keeps [CLS] in the softmax: its probability is the "no answer" one.
            keep = context | np.isin(ids, tok.prefix_ids)
            p_start, p_end = _softmax_over(start[0], keep), _softmax_over(end[0], keep)
            out.append((p_start[context], p_end[context], float(p_start[0] * p_end[0])))
    return out


def _softmax_over(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:  # [n], [n] -> [n]
    """Probabilities over the kept tokens, 0 elsewhere."""
    p = np.zeros(len(logits))
    p[keep] = softmax(logits[keep])
    return p


# ---- spans to answers ---------------------------------------------------------------------------


def _answers(
    context: str,
    tokens: Tokens,
    windows: list[_Window],
    top_k: int,
    max_answer_len: int,
    align_to_words: bool,
) -> list[Answer]:
    """Every window's best spans as answers, in window order, spans of the same text merged."""
    found: list[Answer] = []
    seen: dict[str, Answer] = {}  # lowercased text -> its answer
    k = 2 * top_k + 10 if align_to_words else top_k  # spans in one word give the same text
    for w in windows:
        for s, e, score in zip(*best_spans(w.p_start, w.p_end, k, max_answer_len), strict=True):
            start, end = _characters(
                tokens, w.start, w.stop, w.start + s, w.start + e, align_to_words
            )
            text = context[start:end]
            if text.lower() in seen:
                seen[text.lower()]["score"] += float(score)
            else:
                seen[text.lower()] = Answer(score=float(score), start=start, end=end, answer=text)
                found.append(seen[text.lower()])
    return found


def _characters(
    tokens: Tokens, first: int, stop: int, s: int, e: int, align_to_words: bool
) -> tuple[int, int]:
    """Character offsets of the context's tokens s..e; aligned to words, from the first piece
    of s's word to the last of e's among the window's tokens [first, stop)."""
    words = tokens.word_ids[first:stop]
    if align_to_words and tokens.word_ids[s] >= 0 and tokens.word_ids[e] >= 0:
        s = first + int(np.argmax(words == tokens.word_ids[s]))
        e = stop - 1 - int(np.argmax(words[::-1] == tokens.word_ids[e]))
    return int(tokens.offsets[s, 0]), int(tokens.offsets[e, 1])

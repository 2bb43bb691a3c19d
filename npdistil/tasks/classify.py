"""Sequence classification with label names, as transformers' text-classification pipeline,
and multiple choice.

A sequence classifier reads the [CLS] token and gives one logit per label. Scores are a
softmax over the labels (one label per text), a sigmoid per label (several labels can hold at
once, or a single-label head), or the raw value (regression): the config's ``problem_type``
decides, else the number of labels, as in the pipeline. Labels are named by the config's
``id2label`` (``LABEL_i`` where it has none).

A multiple-choice head scores a prompt paired with each choice, [CLS] prompt [SEP] choice
[SEP], one logit per pair; a softmax over the choices gives their scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..model import transformer as M
from ..text.tokenizer import Batch, check_texts
from .batches import TaskModel, hidden_rows, in_batches
from .scores import sigmoid, softmax

__all__ = ["classify", "multiple_choice", "FUNCTIONS"]

# How logits become scores, by the pipeline's names for it.
SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "softmax": softmax,
    "sigmoid": sigmoid,
    "none": lambda logits: logits.astype(np.float64),
}
FUNCTIONS = tuple(SCORES)


def classify(
    model: TaskModel,
    texts: str | Iterable[str],
    pairs: str | Iterable[str] | None = None,
    *,
    top_k: int | None = 1,
    function_to_apply: str | None = None,
) -> list[Any]:
    """The ``top_k`` best labels of each text (``None``: every label), best first, as dicts
    ``{"label": name, "score": score}``. One text gives one such list; a list of texts gives a
    list of them. With ``pairs``, each text is classified together with its pair (a premise
    and a hypothesis, a question and a passage), as ``{"text": a, "text_pair": b}`` in the
    pipeline.
    """
    one = isinstance(texts, str)
    texts = check_texts(texts)
    second = None if pairs is None else check_texts(pairs)
    if second is not None and len(second) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(second)} pairs: give one each")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError(f"top_k must be a positive integer or None, got {top_k!r}")
    head = model.head("sequence_classification")
    n_labels = head.classifier.bias.shape[0]
    function = _function(model, function_to_apply, n_labels)
    names = [model.config.id2label.get(i, f"LABEL_{i}") for i in range(n_labels)]
    results: list[Any] = []
    for start, chunk in in_batches(texts):
        paired = None if second is None else second[start : start + len(chunk)]
        batch = model.tokenizer(chunk, paired)
        logits = _logits(model, batch, head)  # [B, L]
        scores = SCORES[function](logits)  # [B, L]
        for row in scores:
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append([{"label": names[i], "score": float(row[i])} for i in order])
    return results[0] if one else results


def multiple_choice(model: TaskModel, prompt: str, choices: Sequence[str]) -> list[dict[str, Any]]:
    """Each choice's score as the answer to ``prompt`` (they sum to 1), best first, as dicts
    ``{"choice": text, "index": its place in choices, "score": score}``."""
    (prompt,) = check_texts([prompt])
    if isinstance(choices, str):
        raise InputError("choices must be a list of texts, not one str")
    choices = check_texts(choices)
    head = model.head("multiple_choice")
    batch = model.tokenizer([prompt] * len(choices), choices)  # n pairs: [n, T]
    scores = softmax(_logits(model, batch, head)[:, 0])  # [n, 1] -> [n]
    order = np.argsort(-scores, kind="stable")
    return [{"choice": choices[i], "index": int(i), "score": float(scores[i])} for i in order]


def _logits(model: TaskModel, batch: Batch, head: M.SequenceClassificationHead) -> np.ndarray:
    # The [CLS] tokens, [B, 1, D]: only they are read, so the last layer runs for them alone.
    cls = np.stack(hidden_rows(model, batch, first_only=True))
    return M.sequence_classification_logits(cls, head)  # [B, 1, D] -> [B, L]


def _function(model: TaskModel, function: str | None, n_labels: int) -> str:
    """How logits become scores: as asked, else as the pipeline decides by default."""
    if function is not None:
        if function not in FUNCTIONS:
            raise InputError(f"function_to_apply must be one of {FUNCTIONS}, got {function!r}")
        return function
    problem = model.config.problem_type
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or n_labels == 1:
        return "sigmoid"
    return "softmax"

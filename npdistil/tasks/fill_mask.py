"""Fill-mask: the likeliest tokens for each [MASK] of a text, as transformers' fill-mask pipeline.

For each masked position the masked-LM head gives logits over the vocabulary; a softmax makes
them probabilities and the ``top_k`` best become results with the pipeline's keys: ``score``,
``token`` (its id), ``token_str`` (the token decoded alone) and ``sequence`` (the text with
that one mask filled). Masks are predicted independently: with two masks, each gets its own
list, and each ``sequence`` fills one mask and leaves the other (then, as in the pipeline, the
sequence is decoded with its special tokens).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..model import transformer as M
from ..text.tokenizer import check_texts
from .batches import TaskModel, check_positive, hidden_rows, in_batches
from .scores import softmax

__all__ = ["fill_mask"]


def fill_mask(
    model: TaskModel,
    texts: str | Iterable[str],
    *,
    top_k: int = 5,
    targets: str | Sequence[str] | None = None,
) -> list[Any]:
    """The ``top_k`` likeliest tokens for every mask token of each text.

    One text gives a list of ``top_k`` dicts (one mask) or one such list per mask; a list of
    texts gives a list of those. ``targets`` limits the candidates to these tokens (a word that
    is not one token is replaced by its first piece, with a warning, as the pipeline does).
    """
    one = isinstance(texts, str)
    texts = check_texts(texts)
    check_positive("top_k", top_k)
    head = model.head("masked_lm")
    tok = model.tokenizer
    target_ids = None if targets is None else _target_ids(model, targets)
    k = top_k if target_ids is None else min(top_k, len(target_ids))
    results: list[Any] = []
    for start, chunk in in_batches(texts):
        batch = tok(chunk)
        rows, cols = np.nonzero(batch.input_ids == tok.mask_token_id)  # every mask: [n_masks]
        for r in range(len(chunk)):
            if not (rows == r).any():
                where = "" if not batch.truncated[r] else " (in what fits the model)"
                raise InputError(f"text {start + r} has no {tok.mask_token}{where}")
        hidden = hidden_rows(model, batch)  # B x [n_i, D]
        at_masks = np.stack([hidden[r][c] for r, c in zip(rows, cols, strict=True)])  # [n, D]
        logits = M.masked_lm_logits(at_masks[None], head, model.config)[0]  # [n, V]
        probs = softmax(logits)  # [n_masks, V]
        if target_ids is not None:
            probs = probs[:, target_ids]  # [n_masks, n_targets]
        for r in range(len(chunk)):
            ids = batch.input_ids[r, : batch.attention_mask[r].sum()]  # without padding
            masks = np.flatnonzero(rows == r)
            per_mask = [
                _top(model, ids, int(cols[m]), probs[m], k, target_ids, len(masks) == 1)
                for m in masks
            ]
            results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    return results[0] if one else results


def _top(
    model: TaskModel,
    ids: np.ndarray,
    position: int,
    probs: np.ndarray,
    k: int,
    target_ids: np.ndarray | None,
    single_mask: bool,
) -> list[dict[str, Any]]:
    """One mask's ``k`` best tokens, likeliest first."""
    tok = model.tokenizer
    best = np.argsort(-probs, kind="stable")[:k]
    out = []
    for i in best:
        token = int(i if target_ids is None else target_ids[i])
        filled = ids.copy()
        filled[position] = token
        out.append(
            {
                "score": float(probs[i]),
                "token": token,
                "token_str": tok.decode([token]),
                "sequence": tok.decode(filled, skip_special_tokens=single_mask),
            }
        )
    return out


def _target_ids(model: TaskModel, targets: str | Sequence[str]) -> np.ndarray:
    """The token ids of ``targets``: a token of the vocabulary as is, else the first piece of
    the word (warned), as the pipeline does."""
    tok = model.tokenizer
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise InputError("targets is empty: give at least one token")
    ids = []
    for target in check_texts(targets):
        token_id = tok.token_to_id(target)
        if token_id is None:
            pieces = tok.tokenize(target)[0]
            if not len(pieces.ids):
                warnings.warn(f"target {target!r} gives no token: ignored", stacklevel=3)
                continue
            token_id = int(pieces.ids[0])
            warnings.warn(
                f"target {target!r} is not one token of the vocabulary: using its first "
                f"piece {pieces.tokens[0]!r}",
                stacklevel=3,
            )
        ids.append(token_id)
    if not ids:
        raise InputError(f"no target is a token of the vocabulary: {targets}")
    return np.array(sorted(set(ids)))

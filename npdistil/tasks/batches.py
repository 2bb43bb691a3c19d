"""What the tasks need from a model, and texts through its encoder a batch at a time, each
text's hidden states its own.

The tasks run the encoder packed (``model.forward_packed``): no padding, and each text's
numbers are those it gets alone, whatever else is in its batch. They name the model they run
as ``TaskModel``, the few members they use; ``npdistil.Model`` has them (and attaches the tasks
as its methods), so the tasks never import the class that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import InputError
from ..model.config import EncoderConfig
from ..text.tokenizer import Batch, Tokenizer

__all__ = ["TaskModel", "BATCH_SIZE", "in_batches", "hidden_rows", "check_positive"]


class TaskModel(Protocol):
    """A loaded model as the tasks see it (``npdistil.Model`` is one)."""

    @property
    def config(self) -> EncoderConfig: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def forward_packed(
        self,
        sequences: Sequence[np.ndarray],
        token_types: Sequence[np.ndarray] | None = None,
        *,
        first_only: bool = False,
    ) -> list[np.ndarray]: ...  # B x [n_i] -> B x [n_i, D] (first_only: [1, D]), last layer

    def head(self, kind: str) -> Any: ...  # a task head's weights, or an NpdistilError


BATCH_SIZE = 32  # texts (or windows) per forward pass
T = TypeVar("T")


def in_batches(items: Sequence[T], size: int = BATCH_SIZE) -> Iterator[tuple[int, Sequence[T]]]:
    """``(start, items[start:start + size])`` for each batch.

    >>> [(s, list(b)) for s, b in in_batches("abcde", 2)]
    [(0, ['a', 'b']), (2, ['c', 'd']), (4, ['e'])]
    """
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def hidden_rows(model: TaskModel, batch: Batch, first_only: bool = False) -> list[np.ndarray]:
    """The last hidden state of each row of a tokenized batch, without its padding:
    B x [n_i, D]; with ``first_only``, of its first token only, B x [1, D] (less work)."""
    lengths = batch.attention_mask.sum(axis=1)
    ids = [row[:n] for row, n in zip(batch.input_ids, lengths, strict=True)]
    types = (
        None
        if batch.token_type_ids is None
        else [row[:n] for row, n in zip(batch.token_type_ids, lengths, strict=True)]
    )
    return model.forward_packed(ids, types, first_only=first_only)


def check_positive(name: str, value: object) -> None:
    """An InputError unless ``value`` is a positive integer (a count: top_k, batch_size, ...).

    >>> check_positive("top_k", 0)
    Traceback (most recent call last):
    npdistil.errors.InputError: top_k must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")

"""The UDF, in the Python workers: a partition's rows -> their embeddings, in order.

A row is cut into spans, the texts the model embeds: the whole text, its sentences
(``sentences``), or the documents or sentences of an annotation column. The spans of a chunk of
rows go through ``model.encode`` together; their vectors come back as the row's output, offsets
moved from the span into the document. With a token column, each given token gets the pieces
of its span that start inside it, pooled.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from pyspark import TaskContext

from ..api import Model
from ..errors import CheckpointError, InputError, InputTypeError
from ..text.encode import TokenEmbeddings, WordEmbeddings
from . import sentences as S
from .annotations import (
    SENTENCE_EMBEDDINGS,
    WORD_EMBEDDINGS,
    Annotations,
    Given,
    annotation_column,
    read_column,
    sentence_column,
)
from .shipping import worker_model

__all__ = ["Job", "embed_column"]


class Job(NamedTuple):
    """What a worker needs to embed a column, pickled with the UDF (a few hundred bytes)."""

    model: str  # the shipped file's name, or what npdistil.load takes
    revision: str | None
    shipped: bool
    columns: tuple[str, ...]  # the input columns: a text, or annotations (and tokens)
    annotated: bool  # the first column holds annotations (documents, sentences), not text
    given_tokens: bool  # the second column holds the tokens to embed
    sentences: str | None  # split each text into sentences, in this language
    output_value: str
    per_span: bool  # sentence vectors as one annotation per span, not array<float> per row
    options: dict[str, Any]  # for model.encode
    word_pooling: str  # a given token's vector from its pieces
    handle_invalid: str
    rows_at_a_time: int


class Span(NamedTuple):
    """A text the model embeds: a row's text, one of its sentences, or an input annotation."""

    begin: int  # its first character's offset in the document
    text: str
    sentence: int  # its index (Spark NLP's metadata "sentence")


def embed_column(job: Job, batches: Iterator[Any]) -> Iterator[pa.Array]:
    """The UDF: a partition's input columns, Arrow batch by Arrow batch -> the output column,
    ``job.rows_at_a_time`` rows at a time (Spark accepts any split of the output rows)."""
    try:
        model = worker_model(job.model, job.shipped, job.revision)
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else -1
        row = 0  # in the partition, to name a bad text
        for batch in batches:
            arrays = batch if isinstance(batch, tuple) else (batch,)
            for start in range(0, len(arrays[0]), job.rows_at_a_time):
                chunk = [a.slice(start, job.rows_at_a_time) for a in arrays]
                yield _embed_rows(model, job, chunk, (partition, row))
                row += len(chunk[0])
    except (MemoryError, CheckpointError) as exc:
        limit = os.environ.get("PYSPARK_EXECUTOR_MEMORY_MB")  # set by spark.executor.pyspark.memory
        if limit is None or "llocate" not in str(exc):  # "Cannot allocate", "Unable to allocate"
            raise
        advice = (
            f"spark.executor.pyspark.memory caps this Python worker's address space at {limit} "
            "MB: raise it or lower batchSize (the full-size model ran 512-token texts in 1280 MB "
            "at batchSize 32, in 1 GB at batchSize 4)"
        )
        if isinstance(exc, CheckpointError):
            raise CheckpointError(f"{exc}; {advice}") from None
        raise MemoryError(f"{exc}; {advice}") from None


def _texts(array: pa.Array) -> list[str | None]:
    try:
        return array.to_pylist()
    except UnicodeDecodeError:  # invalid UTF-8 in a JVM string: npdistil will name the row
        raw = array.cast(pa.binary()).to_pylist()
        return [None if b is None else b.decode("utf-8", "surrogateescape") for b in raw]


def _spans(job: Job, array: pa.Array) -> list[list[Span] | None]:
    """Per row, the spans to embed (None for a null row)."""
    if job.annotated:
        rows: list[list[Span] | None] = [
            None
            if row is None
            else [Span(g.begin, g.result, _index(g, i)) for i, g in enumerate(row)]
            for row in read_column(array)
        ]
    else:
        rows = [None if t is None else [Span(0, t, 0)] for t in _texts(array)]
    if job.sentences is None:
        return rows
    return [None if row is None else _split(row, job.sentences) for row in rows]


def _index(given: Given, position: int) -> int:
    return given.sentence if given.sentence is not None else position


def _split(spans: list[Span], language: str) -> list[Span]:
    """Each span's sentences, numbered through the row."""
    out: list[Span] = []
    for span in spans:
        for a, b in S.split(span.text, language):
            out.append(Span(span.begin + a, span.text[a:b], len(out)))
    return out


def _embed_rows(model: Model, job: Job, arrays: list[pa.Array], where: tuple[int, int]) -> pa.Array:
    """One chunk of rows -> its output column; null rows (and with handleInvalid='null' bad
    ones) give null."""
    n = len(arrays[0])
    spans = _spans(job, arrays[0])
    rows = [i for i, s in enumerate(spans) if s is not None]
    results: Any = []
    while True:
        flat = [(i, span) for i in rows for span in spans[i]]  # type: ignore[union-attr]
        try:
            results = _encode(model, job, [span.text for _, span in flat]) if flat else []
            break
        except (InputError, InputTypeError) as exc:
            found = re.search(r"\btext (\d+)\b", str(exc))  # npdistil names the bad text
            if found is None or int(found.group(1)) >= len(flat):
                raise
            bad, span = flat[int(found.group(1))]
            rows.remove(bad)
            if job.handle_invalid == "error":
                shown = repr(span.text[:40]) + ("..." if len(span.text) > 40 else "")
                sentence = f", sentence {span.sentence}" if job.per_span else ""
                raise type(exc)(
                    f"column {job.columns[0]!r}, partition {where[0]}, row {where[1] + bad}"
                    f"{sentence} ({shown}): {str(exc).replace(found.group(0), 'the text', 1)} "
                    "(handleInvalid='null' gives null instead)"
                ) from None
    if job.output_value == "sentence_embedding" and not job.per_span:
        return sentence_column(n, rows, results)
    dim = model.get_sentence_embedding_dimension()
    if job.given_tokens:
        tokens = read_column(arrays[1])
        by_row = _pieces_by_row(flat, results, rows)
        per_row = [
            _given_tokens(model, job, spans[i], tokens[i] or [], pieces, dim)  # type: ignore[arg-type]
            for i, pieces in zip(rows, by_row, strict=True)
        ]
    else:
        per_span = _annotations(model, job, flat, results)
        per_row = [Annotations.join([next(per_span) for _ in spans[i]], dim) for i in rows]  # type: ignore[union-attr]
    kind = SENTENCE_EMBEDDINGS if job.output_value == "sentence_embedding" else WORD_EMBEDDINGS
    return annotation_column(n, rows, per_row, kind, job.output_value == "token_embeddings")


def _encode(model: Model, job: Job, texts: list[str]) -> Any:
    if job.output_value == "token_embeddings" or job.given_tokens:
        # every word piece's vector, string, offsets and word (Spark NLP's token embeddings
        # are these, without [CLS] and [SEP])
        return model.encode(texts, output_value="tokens", **job.options)
    return model.encode(texts, output_value=job.output_value, **job.options)  # type: ignore[arg-type]


def _annotations(
    model: Model, job: Job, flat: list[tuple[int, Span]], results: Any
) -> Iterator[Annotations]:
    """Per span, its annotations (offsets into the document)."""
    spans = [span for _, span in flat]
    if job.output_value == "sentence_embedding":
        for span, vector in zip(spans, results, strict=True):
            yield _sentence_annotation(span, vector)
    elif job.output_value == "word_embeddings":
        ids = _first_pieces(model, job, [s.text for s in spans]) if spans else []
        for span, words, first in zip(spans, results, ids, strict=True):
            yield _word_annotations(span, words, first)
    else:
        vocab = _vocabulary(model)
        for span, pieces in zip(spans, results, strict=True):
            yield _piece_annotations(span, pieces, vocab)


def _first_pieces(model: Model, job: Job, texts: list[str]) -> list[np.ndarray]:
    """Per text, the vocabulary id of each word's first piece (Spark NLP's pieceId)."""
    tok, limit = model.tokenizer, None
    if job.options.get("long_text") in ("truncate", "error"):  # encode keeps one window at most
        limit = (job.options.get("window") or tok.max_length) - tok.n_special
    return [t.ids[_word_starts(t.word_ids)] for t in tok.tokenize(texts, limit=limit)]


def _word_starts(word_ids: np.ndarray) -> np.ndarray:  # [n] -> [n] bool
    """Where a word begins: a word's pieces are consecutive."""
    return np.r_[True, word_ids[1:] != word_ids[:-1]] if len(word_ids) else np.zeros(0, bool)


@functools.lru_cache(maxsize=8)
def _vocabulary(model: Model) -> dict[str, int]:
    return dict(json.loads(model.tokenizer.to_json())["model"]["vocab"])


# ---- annotations of a span ----------------------------------------------------------------------


def _sentence_annotation(span: Span, vector: np.ndarray) -> Annotations:
    """One sentence's vector, as Spark NLP's sentence embeddings carry it."""
    return Annotations(
        begin=np.array([span.begin]),
        end=np.array([span.begin + len(span.text) - 1]),
        result=[span.text],
        metadata=[[str(span.sentence), span.text, "-1", "true", "false"]],
        vectors=np.asarray(vector, np.float32)[None],
    )


def _word_annotations(span: Span, words: WordEmbeddings, first_pieces: np.ndarray) -> Annotations:
    ids = first_pieces[: len(words.words)]  # tokenize may read past a truncated text's end
    sentence = str(span.sentence)
    return Annotations(
        begin=span.begin + words.offsets[:, 0],
        end=span.begin + words.offsets[:, 1] - 1,
        result=list(words.words),
        metadata=[
            [sentence, word, str(i), "true", "false"]
            for word, i in zip(words.words, ids.tolist(), strict=True)
        ],
        vectors=words.vectors,
    )


def _piece_annotations(span: Span, t: TokenEmbeddings, vocab: dict[str, int]) -> Annotations:
    text, sentence = span.text, str(span.sentence)
    starts = _word_starts(t.word_ids)
    first = np.flatnonzero(starts)  # each word's first piece
    last = (np.r_[first[1:], len(starts)] - 1)[: len(first)]  # and last
    words = [text[a:b] for a, b in zip(t.offsets[first, 0], t.offsets[last, 1], strict=True)]
    word_of = np.cumsum(starts) - 1
    return Annotations(
        begin=span.begin + t.offsets[:, 0],
        end=span.begin + t.offsets[:, 1] - 1,
        result=[text[a:b] for a, b in t.offsets.tolist()],
        metadata=[
            [sentence, words[w], str(vocab[piece]), str(bool(s)).lower(), "false", piece]
            for piece, w, s in zip(t.tokens, word_of.tolist(), starts.tolist(), strict=True)
        ],
        vectors=t.vectors,
    )


# ---- given tokens -------------------------------------------------------------------------------


def _pieces_by_row(
    flat: list[tuple[int, Span]], results: list[TokenEmbeddings], rows: list[int]
) -> Iterator[list[TokenEmbeddings]]:
    """The pieces of each row's spans, row by row."""
    at = 0
    for row in rows:
        k = at
        while k < len(flat) and flat[k][0] == row:
            k += 1
        yield results[at:k]
        at = k


def _given_tokens(
    model: Model,
    job: Job,
    spans: list[Span],
    tokens: list[Given],
    pieces: list[TokenEmbeddings],
    dim: int,
) -> Annotations:
    """One vector per given token, in the order given: the pieces of the span holding the
    token that start inside it, pooled (``wordPooling``). A token no piece starts in (all its
    characters dropped by the tokenizer, or past a truncated span) gets zeros and isOOV."""
    vectors = np.zeros((len(tokens), dim), np.float32)
    first_id = np.full(len(tokens), -1, np.int64)
    begins = np.array([t.begin for t in tokens], np.int64)
    ends = np.array([t.end for t in tokens], np.int64)
    sentence = [t.sentence for t in tokens]
    vocab = _vocabulary(model)
    for span, t in zip(spans, pieces, strict=True):
        inside = np.flatnonzero((begins >= span.begin) & (begins < span.begin + len(span.text)))
        for k in inside.tolist():
            if sentence[k] is None:
                sentence[k] = span.sentence
        if not len(inside) or not len(t.tokens):
            continue
        order = inside[np.argsort(begins[inside], kind="stable")]
        starts = span.begin + t.offsets[:, 0]  # [P] each piece's first character
        at = np.searchsorted(begins[order], starts, side="right") - 1  # [P] -> the token before
        ok = (at >= 0) & (starts <= ends[order][np.maximum(at, 0)])
        owner = order[at[ok]]  # [P'] the given token each piece starts in
        piece_vectors = t.vectors[ok]  # [P', D]
        piece_ids = np.array([vocab[p] for p in t.tokens], np.int64)[ok]
        found, first = np.unique(owner, return_index=True)
        first_id[found] = piece_ids[first]
        if job.word_pooling == "first":
            vectors[found] = piece_vectors[first]
        elif job.word_pooling == "mean":
            sums = np.zeros_like(vectors)
            np.add.at(sums, owner, piece_vectors)
            counts = np.bincount(owner, minlength=len(tokens))[found]
            vectors[found] = sums[found] / counts[:, None]
        else:  # "max"
            highest = np.full_like(vectors, -np.inf)
            np.maximum.at(highest, owner, piece_vectors)
            vectors[found] = highest[found]
    return Annotations(
        begin=begins,
        end=ends,
        result=[t.result for t in tokens],
        metadata=[
            [str(s if s is not None else 0), t.result, str(i), "true", str(i < 0).lower()]
            for t, s, i in zip(tokens, sentence, first_id.tolist(), strict=True)
        ],
        vectors=vectors,
    )

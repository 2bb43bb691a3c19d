"""Spark NLP's annotations, in and out: its schema, annotations built field by field into Arrow
columns (for the UDF's output), and annotation columns read back (for its input).

An annotation (``com.johnsnowlabs.nlp.Annotation``) is ``struct<annotatorType: string, begin:
int, end: int, result: string, metadata: map<string,string>, embeddings: array<float>>``, with
``end`` inclusive: ``document[begin:end+1] == result``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from pyspark.sql.types import (
    ArrayType,
    DataType,
    FloatType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from ..errors import InputTypeError

__all__ = ["ANNOTATION", "ANNOTATIONS", "SENTENCE", "Annotations", "Given"]

# Spark NLP's annotation (com.johnsnowlabs.nlp.Annotation.dataType), as a Spark and Arrow type.
ANNOTATION = StructType(
    [
        StructField("annotatorType", StringType(), True),
        StructField("begin", IntegerType(), False),
        StructField("end", IntegerType(), False),
        StructField("result", StringType(), True),
        StructField("metadata", MapType(StringType(), StringType()), True),
        StructField("embeddings", ArrayType(FloatType(), False), True),
    ]
)
_ANNOTATION_ARROW = pa.struct(
    [
        pa.field("annotatorType", pa.string()),
        pa.field("begin", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("result", pa.string()),
        pa.field("metadata", pa.map_(pa.string(), pa.string())),
        pa.field("embeddings", pa.list_(pa.float32())),
    ]
)
ANNOTATIONS = ArrayType(ANNOTATION, False)
SENTENCE = ArrayType(FloatType(), False)
# Spark NLP's AnnotatorType.WORD_EMBEDDINGS and SENTENCE_EMBEDDINGS
WORD_EMBEDDINGS, SENTENCE_EMBEDDINGS = "word_embeddings", "sentence_embeddings"
# What Spark NLP's embedding annotators put in the metadata; piece annotations add "wordpiece".
METADATA_KEYS = ("sentence", "token", "pieceId", "isWordStart", "isOOV")


class Annotations(NamedTuple):
    """Annotations of one row, field by field."""

    begin: np.ndarray  # [k]
    end: np.ndarray  # [k], inclusive
    result: list[str]
    metadata: list[list[str]]  # per annotation, the values of METADATA_KEYS (+ wordpiece)
    vectors: np.ndarray  # [k, D]

    @staticmethod
    def join(parts: list[Annotations], dim: int) -> Annotations:
        """One row's annotations from its sentences' (in order)."""
        if len(parts) == 1:
            return parts[0]
        empty = np.zeros(0, np.int64)
        return Annotations(
            begin=np.concatenate([empty, *(p.begin for p in parts)]),
            end=np.concatenate([empty, *(p.end for p in parts)]),
            result=[r for p in parts for r in p.result],
            metadata=[m for p in parts for m in p.metadata],
            vectors=np.concatenate([np.zeros((0, dim), np.float32), *(p.vectors for p in parts)]),
        )


def lists(n: int, rows: list[int], lengths: list[int], values: pa.Array) -> pa.Array:
    """A list column of ``n`` rows: row ``rows[j]`` holds the next ``lengths[j]`` values, the
    other rows are null."""
    sizes = np.zeros(n, dtype=np.int32)
    sizes[rows] = lengths
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    null = np.ones(n, dtype=bool)
    null[rows] = False
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(null))


def sentence_column(n: int, rows: list[int], vectors: Any) -> pa.Array:
    """``array<float>`` per row: row ``rows[j]`` holds ``vectors[j]``, the others are null."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(rows), -1 if rows else 0)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return lists(n, rows, [vectors.shape[1]] * len(rows), flat)


def annotation_column(
    n: int, rows: list[int], per_row: list[Annotations], annotator_type: str, pieces: bool
) -> pa.Array:
    """``array<annotation>`` per row: row ``rows[j]`` holds ``per_row[j]``, the others are
    null. Built field by field (an Arrow struct of flat arrays), never row by row."""
    k = sum(len(a.result) for a in per_row)
    names = [*METADATA_KEYS, "wordpiece"] if pieces else list(METADATA_KEYS)
    keys = len(names)
    vectors = np.concatenate([a.vectors for a in per_row]) if k else np.zeros((0, 1))
    dim = vectors.shape[1]
    metadata = pa.MapArray.from_arrays(
        pa.array(np.arange(0, k * keys + 1, keys, dtype=np.int32)),
        pa.array(names * k, pa.string()),
        pa.array([v for a in per_row for values in a.metadata for v in values], pa.string()),
    )
    embeddings = pa.ListArray.from_arrays(
        pa.array(np.arange(0, k * dim + 1, dim, dtype=np.int32)),
        pa.array(vectors.astype(np.float32, copy=False).reshape(-1), pa.float32()),
    )
    integers = [np.zeros(0, np.int64)]
    annotations = pa.StructArray.from_arrays(
        [
            pa.array([annotator_type] * k, pa.string()),
            pa.array(np.concatenate(integers + [a.begin for a in per_row]), pa.int32()),
            pa.array(np.concatenate(integers + [a.end for a in per_row]), pa.int32()),
            pa.array([r for a in per_row for r in a.result], pa.string()),
            metadata,
            embeddings,
        ],
        fields=list(_ANNOTATION_ARROW),
    )
    return lists(n, rows, [len(a.result) for a in per_row], annotations)


# ---- annotation columns as input ----------------------------------------------------------------


class Given(NamedTuple):
    """An input annotation: a document, a sentence or a token."""

    begin: int
    end: int  # inclusive
    result: str
    sentence: int | None  # its metadata's "sentence", if it has one


READ = ("begin", "end", "result", "metadata")  # the fields npdistil reads of an input annotation


def check_column(name: str, data_type: DataType) -> None:
    """An input column must hold Spark NLP annotations (the fields npdistil reads, at least)."""
    element = data_type.elementType if isinstance(data_type, ArrayType) else None
    fields = {f.name: f.dataType for f in element.fields} if isinstance(element, StructType) else {}
    wanted = {n: ANNOTATION[n].dataType for n in READ}
    if any(fields.get(n) != t for n, t in wanted.items()):
        raise InputTypeError(
            f"DistilBertEmbeddings: column {name!r} holds {data_type.simpleString()}, not Spark "
            f"NLP annotations (array<struct<annotatorType, begin: int, end: int, result: "
            f"string, metadata: map<string,string>, embeddings>>)"
        )


def read_column(array: pa.Array) -> list[list[Given] | None]:
    """An Arrow column of annotation arrays -> per row its annotations (None for a null row)."""
    out: list[list[Given] | None] = []
    for row in array.to_pylist():
        if row is None:
            out.append(None)
            continue
        given = []
        for a in row:
            if a is None:
                continue
            meta = dict(a["metadata"] or ())
            sentence = meta.get("sentence")
            given.append(
                Given(
                    begin=a["begin"],
                    end=a["end"],
                    result=a["result"] or "",
                    sentence=int(sentence) if sentence and sentence.lstrip("-").isdigit() else None,
                )
            )
        out.append(given)
    return out

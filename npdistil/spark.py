"""npdistil on Apache Spark: a ``pyspark.ml`` Transformer that embeds a DataFrame's text column.

>>> from npdistil.spark import DistilBertEmbeddings
>>> embed = DistilBertEmbeddings(model="distilbert-base-cased", inputCol="text")
>>> embed.transform(df)  # doctest: +SKIP
DataFrame[text: string, embeddings: array<float>]

How it runs. On the driver, ``transform`` resolves the model once (download and conversion
included) and ships the converted file to the executors with ``SparkContext.addFile`` (on
Spark Connect, ``addArtifacts``); with ``modelShipping="path"`` it passes ``model`` on as it
is instead (a path every node can read).
The embedding is an Arrow UDF over the text column alone: each Python worker opens the model
once (a memory map, cached in this module, which outlives tasks because Spark reuses its
workers) and runs ``model.encode`` on a bounded number of rows at a time.

Outputs (``outputValue``):

- ``"sentence_embedding"``: ``array<float>`` per row, exactly ``model.encode(texts)``.
- ``"word_embeddings"``: one annotation per word, its vector pooled from its word pieces
  (``wordPooling``: ``"first"`` as Spark NLP, ``"mean"`` or ``"max"``), exactly
  ``model.encode(texts, output_value="word_embeddings")``.
- ``"token_embeddings"``: one annotation per word piece ([CLS] and [SEP] left out), as Spark
  NLP means token embeddings: ``model.encode(texts, output_value="tokens")``.

An annotation has Spark NLP's layout, ``struct<annotatorType: string, begin: int, end: int,
result: string, metadata: map<string,string>, embeddings: array<float>>``, with ``end``
inclusive so that ``text[begin:end+1] == result``. ``annotatorType`` is ``"word_embeddings"``;
the metadata holds what Spark NLP's embedding annotators put there: ``sentence`` (``"0"``: a
row is one document), ``token`` (the word), ``pieceId`` (the vocabulary id of the word piece;
of a word's first piece for words), ``isWordStart``, and ``isOOV`` (``"false"``: every piece
has a vector). Piece annotations add ``wordpiece``, the piece as the vocabulary spells it.

A null text gives null, ``""`` what ``encode("")`` gives. A text npdistil refuses (invalid
UTF-8; longer than the window with ``longText="error"``) fails the task with npdistil's error
naming the column, partition and row, or gives null with ``handleInvalid="null"``.

Threads: in executors Spark sets ``OMP_NUM_THREADS`` to ``spark.task.cpus`` (1 by default);
NumPy's OpenBLAS reads it, and npdistil splits a batch between as many threads as BLAS has, so
each Python worker runs on one thread and Spark's task slots are the parallelism (measured on
2 cores, benchmarks/spark_bench.py: local[2] embeds at 1.02x the rate of one process running
each batch on two threads).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, NamedTuple, get_args
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
from pyspark import SparkFiles, TaskContext, keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from .api import Model, load
from .errors import CheckpointError, InputError, InputTypeError, NpdistilError
from .text import encode as E
from .text.encode import TokenEmbeddings, WordEmbeddings
from .weights import storage
from .weights.convert import FORMAT

__all__ = ["ANNOTATION", "DistilBertEmbeddings", "worker_model"]

log = logging.getLogger("npdistil.spark")

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
ANNOTATOR_TYPE = "word_embeddings"  # Spark NLP's AnnotatorType.WORD_EMBEDDINGS
METADATA_KEYS = ("sentence", "token", "pieceId", "isWordStart", "isOOV")

OUTPUT_VALUES = ("sentence_embedding", "word_embeddings", "token_embeddings")
# Rows embedded, and handed back to Spark, at a time (recordsPerBatch overrides it). A sentence
# row is D floats, a word or piece row D floats per word or piece: 64 rows of a few hundred
# tokens at D = 768 make tens of MB, where Spark's Arrow batch of 10,000 rows would need GBs.
ROWS_AT_A_TIME = {"sentence_embedding": 1024, "word_embeddings": 64, "token_embeddings": 64}


def _param(name: str, doc: str, convert: Any = TypeConverters.toString) -> Param[Any]:
    return Param(Params._dummy(), name, doc, typeConverter=convert)


class DistilBertEmbeddings(
    Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """Embeds the texts of ``inputCol`` with an npdistil model into ``outputCol``.

    ``model`` is anything ``npdistil.load`` takes (a Hub id, a checkpoint folder, an npdistil
    file, or a loaded ``Model``, which stands for its converted file). Saved in a
    Pipeline, the transformer keeps that reference and its params, never the weights.

    >>> embed = DistilBertEmbeddings(model="tests/fixtures/tiny", outputValue="word_embeddings")
    >>> embed.getInputCol(), embed.getOutputCol(), embed.getOrDefault("wordPooling")
    ('text', 'embeddings', 'first')
    """

    _input_kwargs: dict[str, Any]

    model = _param("model", "a Hub id, a checkpoint folder or an npdistil file")
    revision = _param("revision", "Hub revision (branch, tag or commit) of a Hub id")
    modelShipping = _param(
        "modelShipping",
        "'addFile': the driver converts the model and ships the file with SparkContext.addFile; "
        "'path': every executor loads `model` itself (a path every node can read)",
    )
    outputValue = _param(
        "outputValue",
        "'sentence_embedding' (array<float>), 'word_embeddings' or 'token_embeddings' (arrays "
        "of Spark NLP annotations)",
    )
    pooling = _param(
        "pooling", "sentence pooling, as encode's (default: the model's own, else 'mean')"
    )
    normalize = _param("normalize", "L2-normalise sentence embeddings", TypeConverters.toBoolean)
    wordPooling = _param(
        "wordPooling", "a word's vector from its pieces: 'first' (as Spark NLP), 'mean' or 'max'"
    )
    batchSize = _param("batchSize", "texts per forward pass", TypeConverters.toInt)
    longText = _param(
        "longText",
        "texts longer than the window: 'window' (overlapping), 'truncate' or 'error' (default: "
        "the model's own, as encode's)",
    )
    window = _param(
        "window",
        "tokens per window with [CLS] and [SEP] (default: the model's positions)",
        TypeConverters.toInt,
    )
    stride = _param(
        "stride",
        "tokens shared by neighbouring windows (default: a quarter of the window)",
        TypeConverters.toInt,
    )
    handleInvalid = _param(
        "handleInvalid", "a text npdistil refuses: 'error' fails the task, 'null' outputs null"
    )
    recordsPerBatch = _param(
        "recordsPerBatch",
        "rows embedded and returned to Spark at a time (default 1024 for sentences, 64 for "
        "words and tokens)",
        TypeConverters.toInt,
    )

    _CHOICES = {
        "modelShipping": ("addFile", "path"),
        "outputValue": OUTPUT_VALUES,
        "pooling": get_args(E.Pooling),
        "wordPooling": get_args(E.WordPooling),
        "longText": get_args(E.LongText),
        "handleInvalid": ("error", "null"),
    }

    @keyword_only
    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | Model | None = None,
        inputCol: str | None = None,
        outputCol: str | None = None,
        outputValue: str | None = None,
        revision: str | None = None,
        modelShipping: str | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        wordPooling: str | None = None,
        batchSize: int | None = None,
        longText: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        handleInvalid: str | None = None,
        recordsPerBatch: int | None = None,
    ) -> None:
        super().__init__()
        self._setDefault(
            model="distilbert-base-cased",
            inputCol="text",
            outputCol="embeddings",
            outputValue="sentence_embedding",
            modelShipping="addFile",
            normalize=False,
            wordPooling="first",
            batchSize=32,
            handleInvalid="error",
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        model: str | os.PathLike[str] | Model | None = None,
        inputCol: str | None = None,
        outputCol: str | None = None,
        outputValue: str | None = None,
        revision: str | None = None,
        modelShipping: str | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        wordPooling: str | None = None,
        batchSize: int | None = None,
        longText: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        handleInvalid: str | None = None,
        recordsPerBatch: int | None = None,
    ) -> DistilBertEmbeddings:
        """Set params by keyword (None leaves a param as it is)."""
        values = {k: v for k, v in self._input_kwargs.items() if v is not None}
        if "model" in values:
            values["model"] = _model_reference(values["model"])
        for name, value in values.items():
            _check(name, value, self._CHOICES.get(name))
        return self._set(**values)

    def setModel(self, value: str | os.PathLike[str] | Model) -> DistilBertEmbeddings:
        return self.setParams(model=value)

    def getModel(self) -> str:
        return self.getOrDefault(self.model)

    def setInputCol(self, value: str) -> DistilBertEmbeddings:
        return self.setParams(inputCol=value)

    def setOutputCol(self, value: str) -> DistilBertEmbeddings:
        return self.setParams(outputCol=value)

    def setOutputValue(self, value: str) -> DistilBertEmbeddings:
        return self.setParams(outputValue=value)

    def getOutputValue(self) -> str:
        return self.getOrDefault(self.outputValue)

    # ---- on the driver --------------------------------------------------------------------------

    def _value(self, name: str) -> Any:
        param = self.getParam(name)
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _transform(self, dataset: DataFrame) -> DataFrame:
        input_col, output_col = self.getInputCol(), self.getOutputCol()
        types = {f.name: f.dataType for f in dataset.schema.fields}
        if input_col not in types:
            raise InputError(f"DistilBertEmbeddings: no column {input_col!r} (have {list(types)})")
        if not isinstance(types[input_col], StringType):
            raise InputTypeError(
                f"DistilBertEmbeddings: column {input_col!r} holds "
                f"{types[input_col].simpleString()}, not strings"
            )
        if output_col in types:
            raise InputError(f"DistilBertEmbeddings: output column {output_col!r} already exists")
        job = self._job(dataset.sparkSession)

        def embed(texts: Iterator[pa.Array]) -> Iterator[pa.Array]:  # runs in the workers
            return _embed_column(job, texts)

        returns = SENTENCE if job.output_value == "sentence_embedding" else ANNOTATIONS
        column = F.arrow_udf(embed, returns)(F.col(input_col))  # type: ignore[call-overload]
        if job.output_value != "sentence_embedding":  # Spark NLP marks its columns so
            column = column.alias(output_col, metadata={"annotatorType": ANNOTATOR_TYPE})
        return dataset.withColumn(output_col, column)

    def _job(self, session: SparkSession) -> _Job:
        """What the workers need; ships the model first unless modelShipping is 'path'."""
        model, revision = self.getModel(), self._value("revision")
        shipped = self._value("modelShipping") == "addFile"
        if shipped:
            model = _already_shipped(session, model)  # spark-submit --files model.safetensors
            here = load(model, revision=revision)  # downloaded and converted once, here
            _ = here.tokenizer  # a checkpoint without one fails here, not in every task
            path = here.path
            _ship(session, str(path))
            model, revision = path.name, None
        output_value = self._value("outputValue")
        # encode's own defaults stand where a param is unset (pooling, longText: the model's)
        names = {"batch_size": "batchSize", "long_text": "longText", "window": "window"}
        names |= {"stride": "stride"}
        if output_value == "sentence_embedding":
            names |= {"pooling": "pooling", "normalize_embeddings": "normalize"}
        elif output_value == "word_embeddings":
            names |= {"word_pooling": "wordPooling"}
        options = {k: self._value(v) for k, v in names.items() if self._value(v) is not None}
        return _Job(
            model=model,
            revision=revision,
            shipped=shipped,
            input_col=self.getInputCol(),
            output_value=output_value,
            options=options,
            handle_invalid=self._value("handleInvalid"),
            rows_at_a_time=self._value("recordsPerBatch") or ROWS_AT_A_TIME[output_value],
        )


def _check(name: str, value: Any, allowed: tuple[str, ...] | None) -> None:
    problem = None
    if allowed is not None and value not in allowed:
        problem = f"must be one of {allowed}"
    elif name in ("batchSize", "window", "recordsPerBatch") and not (
        isinstance(value, int) and value >= 1
    ):
        problem = "must be a positive integer"
    elif name == "stride" and not (isinstance(value, int) and value >= 0):
        problem = "must be an integer >= 0"
    if problem:
        raise InputError(f"DistilBertEmbeddings: {name} {problem}, got {value!r}")


def _model_reference(model: Any) -> str:
    """A model as a string a Param can save: a loaded model stands for its converted file."""
    if isinstance(model, Model):
        return str(model.path)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    raise InputTypeError(
        f"DistilBertEmbeddings: model must be a str, a path or a Model, not {type(model).__name__}"
    )


def _ship(session: SparkSession, path: str) -> None:
    """Ship the file at ``path`` to the executors, where ``SparkFiles.get(name)`` finds it:
    ``SparkContext.addFile``, or a Spark Connect session's ``addArtifacts``.

    A file of that name the application already ships (by an earlier transform, or
    ``spark-submit --files``) is recognised whatever Spark recorded for it (``file:`` in local
    mode, ``spark://<driver>/files/...`` on a cluster, ``hdfs:``...), by content: the same size
    and the same npdistil metadata (the source checkpoint's sha256, config, dtype) mean the
    executors already have it. Another file of the same name is refused: Spark would keep the
    first and the workers would embed with the wrong model."""
    path = os.path.abspath(path)
    name = os.path.basename(path)
    if type(session).__module__.startswith("pyspark.sql.connect"):  # no SparkContext there
        try:
            session.addArtifacts(path, file=True)  # the same file again is a no-op
        except Exception as exc:  # a server-side SparkRuntimeException
            if "ARTIFACT_ALREADY_EXISTS" not in str(exc):
                raise
            raise NpdistilError(
                f"{path}: this Spark Connect session already has another file named {name!r}; "
                "rename one of them, or use modelShipping='path'"
            ) from None
        return
    sc = session.sparkContext
    for uri in sc.listFiles:
        if _file_name(uri) != name:
            continue
        copy = _driver_copy(uri)
        if copy is not None and _identity(copy) == _identity(path):
            return  # the executors have (or will fetch) this very content
        why = "another file" if copy is not None else "a file it cannot read on the driver"
        raise NpdistilError(
            f"{path}: this Spark application already ships {why} named {name!r} ({uri}); "
            "rename one of them, or use modelShipping='path'"
        )
    sc.addFile(path)


def _file_name(uri: str) -> str:
    """The name a shipped file has in SparkFiles, from what ``listFiles`` records for it."""
    return os.path.basename(urlparse(uri).path)


def _driver_copy(uri: str) -> str | None:
    """A path on the driver holding the content the application ships under ``uri``: the
    copy ``addFile`` (and so ``--files``) keeps in the driver's SparkFiles folder, else a
    ``file:`` or ``local:`` URI's own path."""
    here = os.path.join(SparkFiles.getRootDirectory(), _file_name(uri))
    if os.path.isfile(here):
        return here
    shipped = urlparse(uri)
    if shipped.scheme in ("", "file", "local") and os.path.isfile(shipped.path):
        return shipped.path
    return None


def _identity(path: str) -> tuple[int, str] | None:
    """An npdistil file's content identity: its size and its metadata (which holds the source
    checkpoint's sha256, the config and the dtype); None for a file that is not one."""
    try:
        header = storage.read_header(path)
    except (OSError, CheckpointError):
        return None
    if header.metadata.get("format") != FORMAT:
        return None
    return os.path.getsize(path), json.dumps(header.metadata, sort_keys=True)


def _already_shipped(session: SparkSession, model: str) -> str:
    """A bare file name the application already ships (``spark-submit --files
    model.safetensors``, ``sc.addFile``) and the driver's folder does not hold: the driver's
    SparkFiles copy of it. Anything else is left as it is."""
    if os.sep in model or os.path.exists(model):
        return model
    if type(session).__module__.startswith("pyspark.sql.connect"):
        return model
    for uri in session.sparkContext.listFiles:
        if _file_name(uri) == model:
            copy = _driver_copy(uri)
            if copy is not None:
                return copy
    return model


# ---- in the Python workers ----------------------------------------------------------------------


class _Job(NamedTuple):
    """What a worker needs to embed a column, pickled with the UDF (a few hundred bytes)."""

    model: str  # the shipped file's name, or what npdistil.load takes
    revision: str | None
    shipped: bool
    input_col: str
    output_value: str
    options: dict[str, Any]  # for model.encode
    handle_invalid: str
    rows_at_a_time: int


def worker_model(reference: str, shipped: bool = False, revision: str | None = None) -> Model:
    """The model, opened once per Python worker: a shipped file by its name (``SparkFiles``
    finds the worker's copy), else what ``npdistil.load`` takes."""
    return _open(SparkFiles.get(reference) if shipped else reference, revision)


@functools.lru_cache(maxsize=8)
def _open(path: str, revision: str | None) -> Model:
    """This module is imported in the workers, which Spark reuses from task to task, so the
    cache lives as long as the worker (a cache in the driver's ``__main__`` would travel with
    the UDF and start empty in every task)."""
    model = load(path, revision=revision)
    log.info("worker %d opened %s", os.getpid(), model.path)
    return model


def _embed_column(job: _Job, arrays: Iterator[pa.Array]) -> Iterator[pa.Array]:
    """The UDF: a partition's texts, Arrow batch by Arrow batch -> their embeddings, in order,
    ``job.rows_at_a_time`` rows at a time (Spark accepts any split of the output rows)."""
    try:
        model = worker_model(job.model, job.shipped, job.revision)
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else -1
        row = 0  # in the partition, to name a bad text
        for array in arrays:
            for start in range(0, len(array), job.rows_at_a_time):
                chunk = array.slice(start, job.rows_at_a_time)
                yield _embed_rows(model, job, _texts(chunk), (f"partition {partition}", row))
                row += len(chunk)
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


def _embed_rows(
    model: Model, job: _Job, texts: list[str | None], where: tuple[str, int]
) -> pa.Array:
    """One chunk of rows -> its output column; null texts (and with handleInvalid='null' bad
    ones) give null."""
    rows = [i for i, t in enumerate(texts) if t is not None]
    good: list[str] = [t for t in texts if t is not None]
    results: Any = []
    while good:
        try:
            results = _encode(model, job, good)
            break
        except (InputError, InputTypeError) as exc:
            found = re.search(r"\btext (\d+)\b", str(exc))  # npdistil names the bad text
            if found is None or int(found.group(1)) >= len(rows):
                raise
            bad = rows.pop(int(found.group(1)))
            good.pop(int(found.group(1)))
            if job.handle_invalid == "error":
                text = texts[bad] or ""
                shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
                raise type(exc)(
                    f"column {job.input_col!r}, {where[0]}, row {where[1] + bad} ({shown}): "
                    f"{str(exc).replace(found.group(0), 'the text', 1)} "
                    "(handleInvalid='null' gives null instead)"
                ) from None
    if job.output_value == "sentence_embedding":
        return _sentence_column(len(texts), rows, results)
    if job.output_value == "word_embeddings":
        ids = _first_pieces(model, job, good) if good else []
        annotations = [_word_annotations(w, i) for w, i in zip(results, ids, strict=True)]
    else:
        vocab = _vocabulary(model)
        annotations = [
            _piece_annotations(text, t, vocab) for text, t in zip(good, results, strict=True)
        ]
    pieces = job.output_value == "token_embeddings"
    return _annotation_column(len(texts), rows, annotations, pieces)


def _encode(model: Model, job: _Job, texts: list[str]) -> Any:
    if job.output_value == "token_embeddings":
        return _pieces(model, job, texts)
    return model.encode(texts, output_value=job.output_value, **job.options)  # type: ignore[arg-type]


def _pieces(model: Model, job: _Job, texts: list[str]) -> list[TokenEmbeddings]:
    """Every word piece's vector, string, offsets and word: encode's per-token output (its
    output_value="tokens"; Spark NLP's token embeddings are these, without [CLS] and [SEP])."""
    return model.encode(texts, output_value="tokens", **job.options)  # type: ignore[no-any-return]


def _first_pieces(model: Model, job: _Job, texts: list[str]) -> list[np.ndarray]:
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


# ---- annotations and Arrow columns --------------------------------------------------------------


class _Annotations(NamedTuple):
    """One text's annotations, field by field."""

    begin: np.ndarray  # [k]
    end: np.ndarray  # [k], inclusive
    result: list[str]
    metadata: list[list[str]]  # per annotation, the values of METADATA_KEYS (+ wordpiece)
    vectors: np.ndarray  # [k, D]


def _word_annotations(words: WordEmbeddings, first_pieces: np.ndarray) -> _Annotations:
    ids = first_pieces[: len(words.words)]  # tokenize may read past a truncated text's end
    return _Annotations(
        begin=words.offsets[:, 0],
        end=words.offsets[:, 1] - 1,
        result=list(words.words),
        metadata=[
            ["0", word, str(i), "true", "false"]
            for word, i in zip(words.words, ids.tolist(), strict=True)
        ],
        vectors=words.vectors,
    )


def _piece_annotations(text: str, t: TokenEmbeddings, vocab: dict[str, int]) -> _Annotations:
    starts = _word_starts(t.word_ids)
    first = np.flatnonzero(starts)  # each word's first piece
    last = (np.r_[first[1:], len(starts)] - 1)[: len(first)]  # and last
    words = [text[a:b] for a, b in zip(t.offsets[first, 0], t.offsets[last, 1], strict=True)]
    word_of = np.cumsum(starts) - 1
    return _Annotations(
        begin=t.offsets[:, 0],
        end=t.offsets[:, 1] - 1,
        result=[text[a:b] for a, b in t.offsets.tolist()],
        metadata=[
            ["0", words[w], str(vocab[piece]), str(bool(s)).lower(), "false", piece]
            for piece, w, s in zip(t.tokens, word_of.tolist(), starts.tolist(), strict=True)
        ],
        vectors=t.vectors,
    )


def _lists(n: int, rows: list[int], lengths: list[int], values: pa.Array) -> pa.Array:
    """A list column of ``n`` rows: row ``rows[j]`` holds the next ``lengths[j]`` values, the
    other rows are null."""
    sizes = np.zeros(n, dtype=np.int32)
    sizes[rows] = lengths
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    null = np.ones(n, dtype=bool)
    null[rows] = False
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(null))


def _sentence_column(n: int, rows: list[int], vectors: Any) -> pa.Array:
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(rows), -1 if rows else 0)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return _lists(n, rows, [vectors.shape[1]] * len(rows), flat)


def _annotation_column(
    n: int, rows: list[int], per_row: list[_Annotations], pieces: bool
) -> pa.Array:
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
            pa.array([ANNOTATOR_TYPE] * k, pa.string()),
            pa.array(np.concatenate(integers + [a.begin for a in per_row]), pa.int32()),
            pa.array(np.concatenate(integers + [a.end for a in per_row]), pa.int32()),
            pa.array([r for a in per_row for r in a.result], pa.string()),
            metadata,
            embeddings,
        ],
        fields=list(_ANNOTATION_ARROW),
    )
    return _lists(n, rows, [len(a.result) for a in per_row], annotations)

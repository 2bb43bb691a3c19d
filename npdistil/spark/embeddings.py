"""``DistilBertEmbeddings``, on the driver: its params, checked; ``transform`` ships the model
and adds the UDF's column."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, get_args

import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasInputCols, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from ..api import Model, load
from ..errors import InputError, InputTypeError
from ..text import encode as E
from . import sentences
from .annotations import ANNOTATIONS, SENTENCE, SENTENCE_EMBEDDINGS, WORD_EMBEDDINGS, check_column
from .shipping import already_shipped, ship
from .worker import Job, embed_column

__all__ = ["DistilBertEmbeddings"]

OUTPUT_VALUES = ("sentence_embedding", "word_embeddings", "token_embeddings")
# Rows embedded, and handed back to Spark, at a time (recordsPerBatch overrides it). A sentence
# row is D floats, a word or piece row D floats per word or piece: 64 rows of a few hundred
# tokens at D = 768 make tens of MB, where Spark's Arrow batch of 10,000 rows would need GBs.
ROWS_AT_A_TIME = {"sentence_embedding": 1024, "word_embeddings": 64, "token_embeddings": 64}


def _param(name: str, doc: str, convert: Any = TypeConverters.toString) -> Param[Any]:
    return Param(Params._dummy(), name, doc, typeConverter=convert)


class DistilBertEmbeddings(
    Transformer,
    HasInputCol,
    HasInputCols,
    HasOutputCol,
    DefaultParamsReadable,
    DefaultParamsWritable,
):
    """Embeds the texts of ``inputCol`` (or, as in a Spark NLP pipeline, the documents or
    sentences and tokens of ``inputCols``) with an npdistil model into ``outputCol``.

    ``model`` is anything ``npdistil.load`` takes (a Hub id, a checkpoint folder, an npdistil
    file, or a loaded ``Model``, which stands for its converted file). Saved in a
    Pipeline, the transformer keeps that reference and its params, never the weights.

    >>> embed = DistilBertEmbeddings(model="tests/fixtures/tiny", outputValue="word_embeddings")
    >>> embed.getInputCol(), embed.getOutputCol(), embed.getOrDefault("wordPooling")
    ('text', 'embeddings', 'first')
    >>> spark_nlp_style = DistilBertEmbeddings(model="tests/fixtures/tiny")
    >>> spark_nlp_style.setInputCols("sentence", "token").getInputCols()
    ['sentence', 'token']
    """

    # Saved Pipelines record the class as "npdistil.spark.DistilBertEmbeddings" (its home
    # when npdistil.spark was one module): keep that name, whatever file the class lives in.
    __module__ = "npdistil.spark"

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
    sentences = _param(
        "sentences",
        "split each text (or input annotation) into sentences and embed each one (sentencex)",
        TypeConverters.toBoolean,
    )
    sentenceLanguage = _param(
        "sentenceLanguage", "the language the sentence splitter follows (an ISO 639 code)"
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
        inputCols: list[str] | None = None,
        sentences: bool | None = None,
        sentenceLanguage: str | None = None,
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
            sentences=False,
            sentenceLanguage="en",
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
        inputCols: list[str] | None = None,
        sentences: bool | None = None,
        sentenceLanguage: str | None = None,
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

    def setInputCols(self, *value: str | list[str]) -> DistilBertEmbeddings:
        """Spark NLP annotation columns, as Spark NLP's annotators take them: a document or
        sentence column, and optionally a token column (``setInputCols("sentence", "token")``
        or a list). They replace ``inputCol``."""
        names = value[0] if len(value) == 1 and isinstance(value[0], list) else list(value)
        return self.setParams(inputCols=names)  # type: ignore[arg-type]

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
        output_col = self.getOutputCol()
        types = {f.name: f.dataType for f in dataset.schema.fields}
        columns = self._columns()
        for name in columns:
            if name not in types:
                raise InputError(f"DistilBertEmbeddings: no column {name!r} (have {list(types)})")
        if self.isSet(self.inputCols):
            for name in columns:
                check_column(name, types[name])
        elif not isinstance(types[columns[0]], StringType):
            raise InputTypeError(
                f"DistilBertEmbeddings: column {columns[0]!r} holds "
                f"{types[columns[0]].simpleString()}, not strings"
            )
        if output_col in types:
            raise InputError(f"DistilBertEmbeddings: output column {output_col!r} already exists")
        job = self._job(dataset.sparkSession, columns)

        # The UDF, run in the workers; Spark reads its kind from the type hints.
        def embed(arrays: Iterator[pa.Array]) -> Iterator[pa.Array]:
            return embed_column(job, arrays)

        def embed_tokens(arrays: Iterator[tuple[pa.Array, pa.Array]]) -> Iterator[pa.Array]:
            return embed_column(job, arrays)

        udf = embed_tokens if job.given_tokens else embed
        as_array = job.output_value == "sentence_embedding" and not job.per_span
        returns = SENTENCE if as_array else ANNOTATIONS
        column = F.arrow_udf(udf, returns)(*map(F.col, columns))  # type: ignore[call-overload]
        if not as_array:  # Spark NLP marks its columns so
            sentence = job.output_value == "sentence_embedding"
            kind = SENTENCE_EMBEDDINGS if sentence else WORD_EMBEDDINGS
            column = column.alias(output_col, metadata={"annotatorType": kind})
        return dataset.withColumn(output_col, column)

    def _columns(self) -> tuple[str, ...]:
        """The input columns: ``inputCols`` (Spark NLP annotations) when set, else ``inputCol``."""
        if not self.isSet(self.inputCols):
            return (self.getInputCol(),)
        columns = tuple(self.getInputCols())
        if len(columns) not in (1, 2):
            raise InputError(
                "DistilBertEmbeddings: inputCols takes a document or sentence column and "
                f"optionally a token column (Spark NLP's annotations), got {list(columns)}"
            )
        return columns

    def _job(self, session: SparkSession, columns: tuple[str, ...]) -> Job:
        """What the workers need; ships the model first unless modelShipping is 'path'."""
        given_tokens = len(columns) == 2
        output_value = self._value("outputValue")
        if given_tokens:  # Spark NLP's shape: one vector per given token
            if not self.isSet(self.outputValue):
                output_value = "word_embeddings"
            elif output_value != "word_embeddings":
                raise InputError(
                    f"DistilBertEmbeddings: a token column ({columns[1]!r}) gives one vector per "
                    f"token, outputValue 'word_embeddings', not {output_value!r}; for sentence "
                    "vectors give the sentence column alone"
                )
            if self._value("sentences"):
                raise InputError(
                    "DistilBertEmbeddings: sentences=True splits texts, but the given tokens "
                    f"({columns[1]!r}) belong to the spans of {columns[0]!r} already"
                )
        split = self._value("sentenceLanguage") if self._value("sentences") else None
        if split is not None:
            sentences.require()
        model, revision = self.getModel(), self._value("revision")
        shipped = self._value("modelShipping") == "addFile"
        if shipped:
            model = already_shipped(session, model)  # spark-submit --files model.safetensors
            here = load(model, revision=revision)  # downloaded and converted once, here
            _ = here.tokenizer  # a checkpoint without one fails here, not in every task
            path = here.path
            ship(session, str(path))
            model, revision = path.name, None
        # encode's own defaults stand where a param is unset (pooling, longText: the model's)
        names = {"batch_size": "batchSize", "long_text": "longText", "window": "window"}
        names |= {"stride": "stride"}
        if output_value == "sentence_embedding":
            names |= {"pooling": "pooling", "normalize_embeddings": "normalize"}
        elif output_value == "word_embeddings" and not given_tokens:
            names |= {"word_pooling": "wordPooling"}
        options = {k: self._value(v) for k, v in names.items() if self._value(v) is not None}
        return Job(
            model=model,
            revision=revision,
            shipped=shipped,
            columns=columns,
            annotated=self.isSet(self.inputCols),
            given_tokens=given_tokens,
            sentences=split,
            output_value=output_value,
            per_span=self.isSet(self.inputCols) or split is not None,
            options=options,
            word_pooling=self._value("wordPooling"),
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

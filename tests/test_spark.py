"""npdistil.spark: DistilBertEmbeddings on a local[2] Spark session, against model.encode.

One session serves the whole module. Its Python workers start through tests/spark_worker_log.py,
which writes every model a worker opens to a file: that is how the tests see which file the
workers opened, and how often.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, TESTS, tiny_reference

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -e '.[spark]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[spark]')")
_JAVA = os.environ.get("JAVA_HOME", "") and Path(os.environ["JAVA_HOME"], "bin", "java").exists()
if not (_JAVA or shutil.which("java")):
    pytest.skip("Spark needs Java 17 or 21, and none is installed", allow_module_level=True)

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import (  # noqa: E402
    ArrayType,
    FloatType,
    IntegerType,
    StructField,
    StructType,
)

import npdistil  # noqa: E402
from npdistil.spark import ANNOTATION, DistilBertEmbeddings  # noqa: E402
from npdistil.weights.convert import recompress  # noqa: E402

TEXTS = [*tiny_reference()[0]["texts"], "", None, "Hello world!", "   "]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS")
LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


@contextlib.contextmanager
def _environment(**values: str | None):
    before = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The session's files: its log4j configuration and the workers' log."""
    return tmp_path_factory.mktemp("spark")


@pytest.fixture(scope="module")
def spark(folder):
    """A local[2] session. The JVM, and through it every Python worker, starts with this
    interpreter, the tests folder on the path (for the daemon above), and none of the BLAS
    thread variables (so that the workers show what Spark itself sets)."""
    (folder / "log4j2.properties").write_text(LOG4J)
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    launch = {k: None for k in THREAD_VARIABLES}
    with _environment(
        PYSPARK_PYTHON=sys.executable, PYTHONPATH=path, SPARK_LOCAL_IP="127.0.0.1", **launch
    ):
        session = (
            SparkSession.builder.master("local[2]")
            .appName("npdistil-tests")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            # Spark Connect (one test) on a port the system picks: the default 15002 may be
            # taken, by another test run on the same machine for one.
            .config("spark.connect.grpc.binding.port", "0")
            .config("spark.python.daemon.module", "spark_worker_log")
            .config("spark.executorEnv.NPDISTIL_SPARK_WORKER_LOG", str(folder / "workers.log"))
            .config("spark.executorEnv.NPDISTIL_CACHE", str(folder / "worker-cache"))
            .config("spark.executorEnv.HF_HUB_OFFLINE", "1")
            .config(
                "spark.driver.extraJavaOptions",
                f"-Dlog4j2.configurationFile=file:{folder / 'log4j2.properties'}",
            )
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _opened(folder) -> list[tuple[int, str]]:
    """(worker pid, file) for every model a Python worker has opened so far."""
    log = folder / "workers.log"
    lines = log.read_text().splitlines() if log.exists() else []
    found = map(
        re.compile(r"worker (\d+) opened (.+) \(\d+ MB\) in .+ s, \d+ BLAS threads?").fullmatch,
        lines,
    )
    return [(int(m[1]), m[2]) for m in found if m]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model, converted once, and its file: every test ships the same file."""
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("tiny"))


def _frame(spark, texts, partitions=3):
    rows = spark.sparkContext.parallelize(list(enumerate(texts)), partitions)
    return spark.createDataFrame(rows, "id int, text string")


def _by_id(df, column="embeddings"):
    """The output column in id order (sorted here: an orderBy would run the UDF twice)."""
    return [r[column] for r in sorted(df.collect(), key=lambda r: r["id"])]


# ---- outputs against model.encode ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pooling": "cls", "normalize": True},
        {"pooling": "max", "longText": "truncate", "recordsPerBatch": 1},  # a null alone too
    ],
)
def test_sentence_embeddings_equal_encode(spark, tiny, options):
    embed = DistilBertEmbeddings(model=tiny, inputCol="text", **options)
    out = embed.transform(_frame(spark, TEXTS))
    assert out.schema["embeddings"].dataType == ArrayType(FloatType(), False)
    got = _by_id(out)
    kept = [t for t in TEXTS if t is not None]
    names = {"pooling": "pooling", "normalize": "normalize_embeddings", "longText": "long_text"}
    encode_options = {names[k]: v for k, v in options.items() if k in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "1 text", UserWarning)  # the long text, truncated
        expected = iter(tiny.encode(kept, **encode_options))
    err = 0.0
    for text, vector in zip(TEXTS, got, strict=True):
        if text is None:
            assert vector is None
            continue
        err = max(err, float(np.abs(np.array(vector, np.float32) - next(expected)).max()))
    print(f"Spark vs encode ({options}): max abs difference {err:.3g}")
    assert err <= 1e-5


def test_a_sentence_transformers_model_keeps_its_own_pooling_length_and_normalizing(
    spark, minilm_folder, tmp_path_factory
):
    """The real all-MiniLM-L6-v2 (a BERT): unset params leave encode's defaults, which are the
    model's (mean pooling, Normalize, texts cut at 256 tokens)."""
    model = npdistil.load(minilm_folder, cache_dir=tmp_path_factory.mktemp("minilm"))
    texts = [*TEXTS, " ".join([TEXTS[4]] * 8)]  # the last one: ~400 tokens, cut at 256
    got = _by_id(DistilBertEmbeddings(model=model).transform(_frame(spark, texts)))
    expected = iter(model.encode([t for t in texts if t is not None]))
    err = 0.0
    for text, vector in zip(texts, got, strict=True):
        if text is None:
            assert vector is None
            continue
        want = next(expected)
        assert len(vector) == 384 and abs(np.linalg.norm(want) - 1) < 1e-5
        err = max(err, float(np.abs(np.array(vector, np.float32) - want).max()))
    print(f"all-MiniLM-L6-v2, Spark vs encode: max abs difference {err:.3g}")
    assert err <= 1e-5


def _first_piece_ids(tiny, texts):
    """Per text, the id of each word's first piece, and each piece's id, from the tokenizer's
    padded batch (not the path npdistil.spark takes)."""
    batch = tiny.tokenizer(texts)
    firsts, pieces = [], []
    for ids, words in zip(batch.input_ids, batch.word_ids, strict=True):
        real = words >= 0
        ids, words = ids[real], words[real]
        starts = np.r_[True, words[1:] != words[:-1]] if len(words) else np.zeros(0, bool)
        firsts.append(ids[starts].tolist())
        pieces.append((ids.tolist(), starts.tolist()))
    return firsts, pieces


def test_word_annotations_equal_encode(spark, tiny):
    texts = TEXTS[:4] + TEXTS[5:]  # the tiny model's 40 positions: leave out the long text
    embed = DistilBertEmbeddings(
        model=tiny, outputValue="word_embeddings", wordPooling="mean", recordsPerBatch=1
    )  # one row at a time: a chunk of one null, one empty text
    out = embed.transform(_frame(spark, texts))
    assert out.schema["embeddings"].dataType == ArrayType(ANNOTATION, False)
    assert out.schema["embeddings"].metadata == {"annotatorType": "word_embeddings"}
    kept = [t for t in texts if t is not None]
    expected = iter(tiny.encode(kept, output_value="word_embeddings", word_pooling="mean"))
    first_ids = iter(_first_piece_ids(tiny, kept)[0])
    err, n = 0.0, 0
    for text, row in zip(texts, _by_id(out), strict=True):
        if text is None:
            assert row is None
            continue
        words, ids = next(expected), next(first_ids)
        assert [a["result"] for a in row] == words.words
        for a, (start, stop), piece in zip(row, words.offsets.tolist(), ids, strict=True):
            assert (a["begin"], a["end"]) == (start, stop - 1)  # end inclusive
            assert text[a["begin"] : a["end"] + 1] == a["result"]
            assert a["annotatorType"] == "word_embeddings"
            assert a["metadata"] == {
                "sentence": "0",
                "token": a["result"],
                "pieceId": str(piece),
                "isWordStart": "true",
                "isOOV": "false",
            }
        if row:
            vectors = np.array([a["embeddings"] for a in row], np.float32)
            err = max(err, float(np.abs(vectors - words.vectors).max()))
        n += len(row)
    print(f"{n} word annotations; Spark vs encode: max abs difference {err:.3g}")
    assert n > 20 and err <= 1e-5


def test_token_annotations_are_every_word_piece_as_encode_gives_it(spark, tiny):
    texts = TEXTS[:4] + TEXTS[5:]
    embed = DistilBertEmbeddings(model=tiny, outputValue="token_embeddings")
    got = _by_id(embed.transform(_frame(spark, texts, partitions=2)))
    kept = [t for t in texts if t is not None]
    expected = iter(tiny.encode(kept, output_value="tokens"))
    pieces = iter(_first_piece_ids(tiny, kept)[1])
    err, n = 0.0, 0
    for text, row in zip(texts, got, strict=True):
        if text is None:
            assert row is None
            continue
        t, (ids, starts) = next(expected), next(pieces)
        assert len(row) == len(t.tokens) == len(ids)  # every piece, no [CLS]/[SEP]
        for a, token, (start, stop), word, piece, first in zip(
            row, t.tokens, t.offsets.tolist(), t.word_ids, ids, starts, strict=True
        ):
            assert (a["begin"], a["end"]) == (start, stop - 1)
            assert a["result"] == text[start:stop]
            w = t.word_ids == word  # the pieces of this piece's word
            word_text = text[t.offsets[w, 0].min() : t.offsets[w, 1].max()]
            assert a["metadata"] == {
                "sentence": "0",
                "token": word_text,
                "pieceId": str(piece),
                "isWordStart": str(first).lower(),
                "isOOV": "false",
                "wordpiece": token,
            }
        if row:
            vectors = np.array([a["embeddings"] for a in row], np.float32)
            err = max(err, float(np.abs(vectors - t.vectors).max()))
        n += len(row)
    print(f"{n} piece annotations; Spark vs encode: max abs difference {err:.3g}")
    assert n > 50 and err <= 1e-5


# ---- bad input -----------------------------------------------------------------------------------


def _bytes_frame(spark):
    # Spark strings can hold bytes that are not UTF-8 (here a UTF-16 surrogate, CESU-8 style).
    return spark.sql(
        "SELECT id, CAST(UNHEX(hex) AS STRING) AS text FROM VALUES "
        "(0, '48656C6C6F'), (1, '61EDA08062'), (2, NULL) AS rows(id, hex)"
    ).coalesce(1)


def test_a_text_that_is_not_unicode_fails_the_task_naming_its_row(spark, tiny):
    with pytest.raises(Exception, match="InputError") as caught:
        DistilBertEmbeddings(model=tiny).transform(_bytes_frame(spark)).collect()
    message = str(caught.value)
    print(message[-300:])
    assert "column 'text', partition 0, row 1 ('a\\udced\\udca0\\udc80b')" in message
    assert "not valid Unicode" in message


def test_handle_invalid_null_gives_null_for_bad_texts(spark, tiny):
    embed = DistilBertEmbeddings(model=tiny, handleInvalid="null")
    hello, bad, null = _by_id(embed.transform(_bytes_frame(spark)))
    assert bad is None and null is None
    np.testing.assert_allclose(hello, tiny.encode(["Hello"])[0], atol=1e-5)
    too_long = DistilBertEmbeddings(model=tiny, handleInvalid="null", longText="error")
    got = _by_id(too_long.transform(_frame(spark, TEXTS, partitions=1)))
    assert [g is None for g in got] == [t is None or t == TEXTS[4] for t in TEXTS]


def test_bad_columns_and_params_are_refused_on_the_driver(spark, tiny):
    df = _frame(spark, ["a"])
    with pytest.raises(npdistil.InputError, match=r"no column 'body' \(have \['id', 'text'\]\)"):
        DistilBertEmbeddings(model=tiny, inputCol="body").transform(df)
    with pytest.raises(npdistil.InputTypeError, match="column 'id' holds int, not strings"):
        DistilBertEmbeddings(model=tiny, inputCol="id").transform(df)
    with pytest.raises(npdistil.InputError, match="output column 'id' already exists"):
        DistilBertEmbeddings(model=tiny, outputCol="id").transform(df)
    with pytest.raises(npdistil.InputError, match="outputValue must be one of"):
        DistilBertEmbeddings(outputValue="words")
    with pytest.raises(npdistil.InputError, match="batchSize must be a positive integer"):
        DistilBertEmbeddings(batchSize=0)


# ---- sentences, and Spark NLP's annotation columns as input -------------------------------------

DOCUMENTS = [
    "Dr. Watson met Mrs. Hudson. They talked until 5 p.m. on Baker St. Then he left!",
    "One sentence only",
    "",
    None,
    "  Spaces around.   And between.  ",
]


def test_sentences_splits_each_text_and_embeds_each_sentence(spark, tiny):
    """One annotation per sentence: its text, offsets into the document, its index; its
    vector encode's for that sentence alone."""
    embed = DistilBertEmbeddings(model=tiny, sentences=True)
    out = embed.transform(_frame(spark, DOCUMENTS))
    assert out.schema["embeddings"].dataType == ArrayType(ANNOTATION, False)
    assert out.schema["embeddings"].metadata == {"annotatorType": "sentence_embeddings"}
    got = _by_id(out)
    # written by hand: what a reader calls the sentences of these documents
    expected = [
        ["Dr. Watson met Mrs. Hudson.", "They talked until 5 p.m. on Baker St.", "Then he left!"],
        ["One sentence only"],
        [],
        None,
        ["Spaces around.", "And between."],
    ]
    err = 0.0
    for doc, want, row in zip(DOCUMENTS, expected, got, strict=True):
        if want is None:
            assert row is None
            continue
        assert [a["result"] for a in row] == want
        at = 0
        for i, (a, sentence) in enumerate(zip(row, want, strict=True)):
            at = doc.index(sentence, at)
            assert (a["begin"], a["end"]) == (at, at + len(sentence) - 1)
            assert a["annotatorType"] == "sentence_embeddings"
            assert a["metadata"]["sentence"] == str(i)
        if want:
            vectors = np.array([a["embeddings"] for a in row], np.float32)
            err = max(err, float(np.abs(vectors - tiny.encode(want)).max()))
    print(f"sentence vectors vs encode of each sentence: max abs difference {err:.3g}")
    assert err <= 1e-5


def test_sentences_with_word_output_give_document_offsets_and_sentence_indices(spark, tiny):
    embed = DistilBertEmbeddings(model=tiny, sentences=True, outputValue="word_embeddings")
    got = _by_id(embed.transform(_frame(spark, DOCUMENTS[:1], partitions=1)))[0]
    doc = DOCUMENTS[0]
    sentences = [
        "Dr. Watson met Mrs. Hudson.",
        "They talked until 5 p.m. on Baker St.",
        "Then he left!",
    ]
    at, err, n = 0, 0.0, 0
    for i, sentence in enumerate(sentences):
        at = doc.index(sentence, at)
        words = tiny.encode(sentence, output_value="word_embeddings")
        mine = [a for a in got if a["metadata"]["sentence"] == str(i)]
        assert [a["result"] for a in mine] == words.words
        assert [[a["begin"] - at, a["end"] + 1 - at] for a in mine] == words.offsets.tolist()
        assert all(doc[a["begin"] : a["end"] + 1] == a["result"] for a in mine)
        vectors = np.array([a["embeddings"] for a in mine], np.float32)
        err = max(err, float(np.abs(vectors - words.vectors).max()))
        n += len(mine)
    print(f"{n} words in 3 sentences; vs encode of each sentence: {err:.3g}")
    assert n == len(got) and err <= 1e-5


def _annotation(kind, begin, end, result, sentence):
    """An annotation as Spark NLP's DocumentAssembler, SentenceDetector and Tokenizer write
    it (com.johnsnowlabs.nlp.Annotation: end inclusive, metadata "sentence", no embeddings)."""
    return (kind, begin, end, result, {"sentence": str(sentence)}, [])


def _spark_nlp_frame(spark):
    """Columns built to Spark NLP's published schema: document, sentence and token annotations
    (tokens as Spark NLP's default Tokenizer splits: "York-based" is one token, "can't" two)."""
    docs = [
        "New York-based, we can't stop. Hello world!",
        "No tokens here.",
        None,
        "Ünïcode café. Ok",
    ]
    token_splits = [
        ["New", "York-based", ",", "we", "ca", "n't", "stop", ".", "Hello", "world", "!"],
        [],
        None,
        ["Ünïcode", "café", ".", "Ok"],
    ]
    sentence_splits = [
        ["New York-based, we can't stop.", "Hello world!"],
        ["No tokens here."],
        None,
        ["Ünïcode café.", "Ok"],
    ]
    rows = []
    for i, (doc, sents, toks) in enumerate(zip(docs, sentence_splits, token_splits, strict=True)):
        if doc is None:
            rows.append((i, None, None, None))
            continue
        document = [_annotation("document", 0, len(doc) - 1, doc, 0)]
        sentences, tokens, at = [], [], 0
        for k, sentence in enumerate(sents):
            start = doc.index(sentence, at)
            sentences.append(_annotation("document", start, start + len(sentence) - 1, sentence, k))
            at = start + len(sentence)
        at = 0
        for token in toks:
            start = doc.index(token, at)
            k = next(j for j, a in enumerate(sentences) if a[1] <= start <= a[2])
            tokens.append(_annotation("token", start, start + len(token) - 1, token, k))
            at = start + len(token)
        rows.append((i, document, sentences, tokens))
    schema = StructType(
        [StructField("id", IntegerType())]
        + [StructField(c, ArrayType(ANNOTATION, True)) for c in ("document", "sentence", "token")]
    )
    return spark.createDataFrame(rows, schema).repartition(2), docs


def _pooled_by_hand(tiny, spans, tokens, pooling):
    """The vector of each given token, computed here: encode each span's pieces (its
    output_value="tokens"), take the pieces that start inside the token, pool them."""
    out = []
    for token in tokens:
        span = next(s for s in spans if s["begin"] <= token["begin"] <= s["end"])
        pieces = tiny.encode(span["result"], output_value="tokens")
        inside = [
            v
            for v, (start, _) in zip(pieces.vectors, pieces.offsets.tolist(), strict=True)
            if token["begin"] <= span["begin"] + start <= token["end"]
        ]
        if not inside:
            out.append(np.zeros(tiny.get_sentence_embedding_dimension(), np.float32))
        elif pooling == "first":
            out.append(inside[0])
        elif pooling == "mean":
            out.append(np.mean(inside, axis=0))
        else:
            out.append(np.max(inside, axis=0))
    return out


@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
@pytest.mark.parametrize("context", ["sentence", "document"])
def test_spark_nlp_columns_give_one_vector_per_given_token(spark, tiny, pooling, context):
    """setInputCols(context, "token"), as in a Spark NLP pipeline: one word_embeddings
    annotation per given token, its offsets and text the token's, its vector its pieces
    pooled; the model sees each sentence (or the whole document) as one text."""
    df, docs = _spark_nlp_frame(spark)
    embed = DistilBertEmbeddings(model=tiny, wordPooling=pooling).setInputCols(context, "token")
    out = embed.transform(df)
    assert out.schema["embeddings"].metadata == {"annotatorType": "word_embeddings"}
    inputs = {r["id"]: r for r in df.collect()}
    err, n = 0.0, 0
    for i, row in enumerate(_by_id(out)):
        given = inputs[i]
        if given["token"] is None:
            assert row is None
            continue
        tokens = given["token"]
        assert [(a["begin"], a["end"], a["result"]) for a in row] == [
            (t["begin"], t["end"], t["result"]) for t in tokens
        ]
        for a, t in zip(row, tokens, strict=True):
            assert docs[i][a["begin"] : a["end"] + 1] == a["result"]
            assert a["metadata"]["sentence"] == t["metadata"]["sentence"]
            assert a["metadata"]["isOOV"] == "false"
        if tokens:
            want = _pooled_by_hand(tiny, given[context], tokens, pooling)
            got = np.array([a["embeddings"] for a in row], np.float32)
            err = max(err, float(np.abs(got - np.array(want)).max()))
        n += len(row)
    print(f"{n} given tokens ({context}, {pooling}): vs pieces pooled by hand {err:.3g}")
    assert n == 15 and err <= 1e-5


def test_a_given_token_no_piece_starts_in_is_kept_with_zeros_and_is_oov(spark, tiny):
    """The tokenizer drops control and zero-width characters: a token made of them still gets
    its annotation (no silent drop), with a vector of zeros and isOOV "true"."""
    doc = "Hi \x07 there \u200b ok"
    tokens = [(w, doc.index(w)) for w in ("Hi", "\x07", "there", "\u200b", "ok")]
    row = (
        0,
        [_annotation("document", 0, len(doc) - 1, doc, 0)],
        [_annotation("token", at, at + len(w) - 1, w, 0) for w, at in tokens],
    )
    schema = StructType(
        [StructField("id", IntegerType())]
        + [StructField(c, ArrayType(ANNOTATION, True)) for c in ("document", "token")]
    )
    df = spark.createDataFrame([row], schema)
    [got] = _by_id(DistilBertEmbeddings(model=tiny).setInputCols("document", "token").transform(df))
    assert [a["result"] for a in got] == [w for w, _ in tokens]
    assert [a["metadata"]["isOOV"] for a in got] == ["false", "true", "false", "true", "false"]
    assert [a["metadata"]["pieceId"] == "-1" for a in got] == [False, True, False, True, False]
    pieces = tiny.encode(doc, output_value="tokens")
    np.testing.assert_allclose(got[2]["embeddings"], pieces.vectors[2], atol=1e-5)  # "there"
    assert not np.any(got[1]["embeddings"]) and not np.any(got[3]["embeddings"])


def test_a_sentence_column_alone_gives_one_vector_per_sentence(spark, tiny):
    df, docs = _spark_nlp_frame(spark)
    out = DistilBertEmbeddings(model=tiny).setInputCols(["sentence"]).transform(df)
    inputs = {r["id"]: r["sentence"] for r in df.collect()}
    err = 0.0
    for i, row in enumerate(_by_id(out)):
        if inputs[i] is None:
            assert row is None
            continue
        assert [(a["begin"], a["end"], a["result"]) for a in row] == [
            (s["begin"], s["end"], s["result"]) for s in inputs[i]
        ]
        vectors = np.array([a["embeddings"] for a in row], np.float32)
        err = max(err, float(np.abs(vectors - tiny.encode([s["result"] for s in inputs[i]])).max()))
    print(f"one vector per sentence annotation, vs encode: {err:.3g}")
    assert err <= 1e-5


def test_spark_nlp_columns_are_checked_on_the_driver(spark, tiny):
    df, _ = _spark_nlp_frame(spark)
    with pytest.raises(npdistil.InputTypeError, match="column 'id' holds int, not Spark NLP"):
        DistilBertEmbeddings(model=tiny).setInputCols("id", "token").transform(df)
    with pytest.raises(npdistil.InputError, match="one vector per token, outputValue"):
        DistilBertEmbeddings(model=tiny, outputValue="sentence_embedding").setInputCols(
            "sentence", "token"
        ).transform(df)
    with pytest.raises(npdistil.InputError, match="sentences=True splits texts"):
        DistilBertEmbeddings(model=tiny, sentences=True).setInputCols(
            "sentence", "token"
        ).transform(df)
    with pytest.raises(npdistil.InputError, match="inputCols takes a document or sentence"):
        DistilBertEmbeddings(model=tiny).setInputCols("document", "sentence", "token").transform(df)


# ---- saving, shipping, loading -------------------------------------------------------------------


def test_pipeline_saves_the_model_reference_and_params_never_the_weights(spark, tiny, tmp_path):
    stage = DistilBertEmbeddings(
        model=tiny, outputValue="word_embeddings", wordPooling="max", batchSize=3
    )
    df = _frame(spark, TEXTS[:4])
    fitted = Pipeline(stages=[stage]).fit(df)
    fitted.write().save(str(tmp_path / "pipeline"))
    saved = [p for p in (tmp_path / "pipeline").rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in saved)
    print(f"saved pipeline: {len(saved)} files, {size} bytes")
    assert size < 20_000 and not any(p.suffix == ".safetensors" for p in saved)
    # Spark records the class by its module path: npdistil.spark's, whatever file holds it
    meta = next((tmp_path / "pipeline" / "stages").glob("*/metadata/part-*")).read_text()
    assert json.loads(meta)["class"] == "npdistil.spark.DistilBertEmbeddings"
    [again] = PipelineModel.load(str(tmp_path / "pipeline")).stages
    assert isinstance(again, DistilBertEmbeddings)
    params = {p.name: v for p, v in stage.extractParamMap().items()}
    assert {p.name: v for p, v in again.extractParamMap().items()} == params
    assert params["model"] == str(tiny.path) and params["batchSize"] == 3
    assert _by_id(again.transform(df)) == _by_id(stage.transform(df))


def test_the_driver_ships_the_model_file_or_workers_open_a_shared_path(
    spark, folder, tiny, tmp_path
):
    df = _frame(spark, ["shipped"], partitions=1)
    _by_id(DistilBertEmbeddings(model=tiny).transform(df))
    assert f"file:{tiny.path}" in spark.sparkContext.listFiles
    # The workers open their own copy, fetched by Spark, never the driver's file.
    opened = {Path(f) for _, f in _opened(folder)}
    assert any(f.name == tiny.path.name and f != tiny.path for f in opened), opened

    # The same content under the same name, from another folder: already shipped, accepted.
    (tmp_path / "copy").mkdir()
    same = shutil.copy(tiny.path, tmp_path / "copy" / tiny.path.name)
    before = list(spark.sparkContext.listFiles)
    _by_id(DistilBertEmbeddings(model=same).transform(df))
    assert spark.sparkContext.listFiles == before
    # Another file of the same name (here the same model in float16) would make the workers
    # embed with the first one: refused.
    (tmp_path / "other").mkdir()
    other = recompress(tiny.path, tmp_path / "other" / tiny.path.name, "float16")
    with pytest.raises(npdistil.NpdistilError, match="already ships another file named"):
        DistilBertEmbeddings(model=other).transform(df)

    shared = tmp_path / "shared.safetensors"
    shutil.copy(tiny.path, shared)
    embed = DistilBertEmbeddings(model=str(shared), modelShipping="path")
    np.testing.assert_allclose(
        _by_id(embed.transform(df))[0], tiny.encode(["shipped"])[0], atol=1e-5
    )
    assert shared.name not in {uri.rsplit("/", 1)[-1] for uri in spark.sparkContext.listFiles}
    assert str(shared) in {f for _, f in _opened(folder)}
    missing = DistilBertEmbeddings(model=str(tmp_path / "nowhere"), modelShipping="path")
    with pytest.raises(Exception, match="CheckpointError: .*nowhere: no such file or folder"):
        missing.transform(df).collect()


def test_a_bare_file_name_the_application_ships_is_the_shipped_file(
    spark, folder, tiny, tmp_path, monkeypatch
):
    """``spark-submit --files model.safetensors`` with ``model="model.safetensors"``: the
    driver finds the name among the files the application ships (here added by
    ``sc.addFile``, as --files does), not in its working folder."""
    shipped = tmp_path / "submitted.safetensors"
    shutil.copy(tiny.path, shipped)
    spark.sparkContext.addFile(str(shipped))
    monkeypatch.chdir(tmp_path.parent)  # the name is no path from here
    assert not Path("submitted.safetensors").exists()
    before = list(spark.sparkContext.listFiles)
    texts = ["Hello world!", None, "One more text."]
    for output_value in ("sentence_embedding", "word_embeddings"):  # two transforms
        embed = DistilBertEmbeddings(model="submitted.safetensors", outputValue=output_value)
        got = _by_id(embed.transform(_frame(spark, texts, partitions=2)))
        assert got[1] is None
        if output_value == "sentence_embedding":
            np.testing.assert_allclose(got[0], tiny.encode(["Hello world!"])[0], atol=1e-5)
    assert spark.sparkContext.listFiles == before  # nothing shipped twice
    opened = {Path(f) for _, f in _opened(folder)}
    assert any(f.name == shipped.name and f != shipped for f in opened), opened


def test_a_shipped_file_is_recognised_whatever_scheme_spark_recorded(spark, tiny, tmp_path):
    """On a cluster Spark records ``spark://<driver>:<port>/files/<name>`` (tests/
    test_spark_cluster.py runs that for real); ``hdfs:`` or ``local:`` when the user ships
    from there. The driver's SparkFiles copy (or a local path) stands for the content."""
    from pyspark import SparkFiles

    from npdistil.spark.shipping import ship

    name = "recorded.safetensors"
    shutil.copy(tiny.path, Path(SparkFiles.getRootDirectory()) / name)
    (tmp_path / "a").mkdir()
    same = shutil.copy(tiny.path, tmp_path / "a" / name)
    other = recompress(tiny.path, tmp_path / name, "float16")

    class Context:  # what _ship reads of a SparkContext; nothing is added to the real one
        def __init__(self, uri):
            self.listFiles, self.added = [uri], []

        def addFile(self, path):
            self.added.append(path)

    class Session:
        def __init__(self, uri):
            self.sparkContext = Context(uri)

    for uri in (
        f"spark://127.0.0.1:46199/files/{name}",
        f"hdfs://namenode:8020/models/{name}",
        f"local:{same}",
        f"file:{same}",
    ):
        session = Session(uri)
        ship(session, str(same))  # the same content: nothing to add
        assert session.sparkContext.added == [], uri
        refused = f"already ships another file named '{name}'"
        with pytest.raises(npdistil.NpdistilError, match=refused):
            ship(session, str(other))
    session = Session("spark://127.0.0.1:46199/files/elsewhere.safetensors")
    ship(session, str(same))  # another name: shipped
    assert session.sparkContext.added == [str(same)]


def test_each_python_worker_opens_the_model_once(spark, folder, tiny, tmp_path):
    own = tmp_path / "once.safetensors"  # a file no worker has opened yet
    shutil.copy(tiny.path, own)
    texts = [f"text number {i}" for i in range(96)]
    embed = DistilBertEmbeddings(model=str(own), recordsPerBatch=2)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "4")
    try:
        got = _by_id(embed.transform(_frame(spark, texts, partitions=8)))
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert all(g is not None for g in got)
    opens = Counter(pid for pid, f in _opened(folder) if Path(f).name == own.name)
    print(f"8 tasks, 24 Arrow batches, 48 chunks: opens per worker pid {dict(opens)}")
    assert opens and set(opens.values()) == {1}
    assert sum(opens.values()) < 8  # fewer opens than tasks: workers were reused


def test_python_workers_run_one_blas_thread(spark):
    @F.udf("string")
    def threads(_):  # noqa: ANN001 (a hint would make Spark look for an Arrow UDF)
        from npdistil.model import kernels

        omp = os.environ.get("OMP_NUM_THREADS")
        return f"OMP_NUM_THREADS={omp} n_threads={kernels.n_threads()}"

    seen = {r[0] for r in _frame(spark, ["a", "b"], 2).select(threads("id")).collect()}
    print(f"in the workers: {seen}")
    assert seen == {"OMP_NUM_THREADS=1 n_threads=1"}


# ---- Spark Connect -------------------------------------------------------------------------------

_CONNECT_CLIENT = """
import json, sys
from pyspark.ml import Pipeline, PipelineModel
from pyspark.sql import SparkSession
from npdistil.spark import DistilBertEmbeddings

url, model, folder = sys.argv[1:]
spark = SparkSession.builder.remote(url).getOrCreate()
df = spark.createDataFrame([(0, "Hello world!"), (1, None)], "id int, text string")

def run(stage):
    return [r.embeddings for r in sorted(stage.transform(df).collect())]

out = {"type": type(spark).__module__, "sentences": run(DistilBertEmbeddings(model=model))}
words = run(DistilBertEmbeddings(model=model, outputValue="word_embeddings"))
out["words"] = [None if w is None else [a.result for a in w] for w in words]
out["path"] = run(DistilBertEmbeddings(model=model, modelShipping="path"))
Pipeline(stages=[DistilBertEmbeddings(model=model)]).fit(df).write().save(folder)
out["loaded"] = run(PipelineModel.load(folder).stages[0])
print(json.dumps(out))
"""


def _connect_server(spark) -> str:
    """Start a Spark Connect server in the session's own JVM; its address. (Its port, chosen
    by the system (binding port 0), is only reachable by reflection.)"""
    jvm, gateway = spark._jvm, spark.sparkContext._gateway
    jvm.org.apache.spark.sql.connect.service.SparkConnectService.start(spark._jsc.sc())
    service = jvm.java.lang.Class.forName(
        "org.apache.spark.sql.connect.service.SparkConnectService$"
    )
    local_port = service.getDeclaredMethod("localPort", gateway.new_array(jvm.java.lang.Class, 0))
    local_port.setAccessible(True)
    instance = service.getField("MODULE$").get(None)
    return (
        f"sc://localhost:{local_port.invoke(instance, gateway.new_array(jvm.java.lang.Object, 0))}"
    )


def test_spark_connect_ships_the_model_as_an_artifact(spark, tiny, tmp_path):
    for module in ("grpc", "google.protobuf", "zstandard"):
        pytest.importorskip(module, reason="Spark Connect needs pyspark[connect]")
    url = _connect_server(spark)
    done = subprocess.run(  # a process of its own: a Connect client changes pyspark globally
        [sys.executable, "-c", _CONNECT_CLIENT, url, str(tiny.path), str(tmp_path / "saved")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["type"].startswith("pyspark.sql.connect")
    hello = tiny.encode(["Hello world!"])[0]
    for key in ("sentences", "path", "loaded"):
        vector, null = out[key]
        assert null is None
        np.testing.assert_allclose(vector, hello, atol=1e-5)
    assert out["words"] == [["Hello", "world", "!"], None]


def test_import_npdistil_leaves_pyspark_alone():
    code = "import sys, npdistil; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = set(done.stdout.split()) & {"pyspark", "py4j", "pyarrow", "pandas"}
    assert not heavy, f"import npdistil imported {heavy}"

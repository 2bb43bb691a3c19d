"""npdistil on Apache Spark: a ``pyspark.ml`` Transformer that embeds a DataFrame's texts.

>>> from npdistil.spark import DistilBertEmbeddings
>>> embed = DistilBertEmbeddings(model="distilbert-base-cased", inputCol="text")
>>> embed.transform(df)  # doctest: +SKIP
DataFrame[text: string, embeddings: array<float>]

How it runs. On the driver, ``transform`` resolves the model once (download and conversion
included) and ships the converted file to the executors with ``SparkContext.addFile`` (on
Spark Connect, ``addArtifacts``), once per application: a file the application already ships
is recognised by its content, whatever Spark recorded for it; with ``modelShipping="path"`` it
passes ``model`` on as it is instead (a path every node can read).
The embedding is an Arrow UDF over the input columns alone: each Python worker opens the model
once (a memory map, cached in ``shipping``, which outlives tasks because Spark reuses its
workers), logs that to the executor's stderr, and runs ``model.encode`` on a bounded number of
rows at a time.

Inputs: a text column (``inputCol``), split into sentences with ``sentences=True``; or, as in a
Spark NLP pipeline, columns of Spark NLP annotations (``setInputCols("sentence", "token")``):
documents or sentences, and optionally the tokens to give one vector each.

Outputs (``outputValue``):

- ``"sentence_embedding"``: ``array<float>`` per row, exactly ``model.encode(texts)``; one
  ``"sentence_embeddings"`` annotation per sentence when rows are split into sentences or come
  as annotations.
- ``"word_embeddings"``: one annotation per word, its vector pooled from its word pieces
  (``wordPooling``: ``"first"`` as Spark NLP, ``"mean"`` or ``"max"``), exactly
  ``model.encode(texts, output_value="word_embeddings")``; with a token column, one per given
  token.
- ``"token_embeddings"``: one annotation per word piece ([CLS] and [SEP] left out), as Spark
  NLP means token embeddings: ``model.encode(texts, output_value="tokens")``.

The package: ``embeddings`` (the Transformer, on the driver), ``shipping`` (the model to the
executors and open there), ``worker`` (the UDF), ``annotations`` (Spark NLP's annotations in
and out), ``sentences`` (the splitter).
"""

from .annotations import ANNOTATION
from .embeddings import DistilBertEmbeddings
from .shipping import worker_model

__all__ = ["ANNOTATION", "DistilBertEmbeddings", "worker_model"]

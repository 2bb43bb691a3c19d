"""The model to the executors (on the driver), and open there (in the Python workers).

On the driver, ``ship`` hands the converted file to Spark once per application; a file the
application already ships is recognised by its content whatever Spark recorded for it. In a
worker, ``worker_model`` opens the shipped copy (or a path) once, logs it to the executor's
stderr, and keeps it as long as Spark keeps the worker.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from urllib.parse import urlparse

from pyspark import SparkFiles
from pyspark.sql import SparkSession

from ..api import Model, load
from ..errors import CheckpointError, NpdistilError
from ..model import kernels
from ..weights import storage
from ..weights.convert import FORMAT

__all__ = ["already_shipped", "ship", "worker_model"]

log = logging.getLogger("npdistil.spark")


def _connect(session: SparkSession) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


def ship(session: SparkSession, path: str) -> None:
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
    if _connect(session):  # no SparkContext there
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


def already_shipped(session: SparkSession, model: str) -> str:
    """A bare file name the application already ships (``spark-submit --files
    model.safetensors``, ``sc.addFile``) and the driver's folder does not hold: the driver's
    SparkFiles copy of it. Anything else is left as it is."""
    if os.sep in model or os.path.exists(model) or _connect(session):
        return model
    for uri in session.sparkContext.listFiles:
        if _file_name(uri) == model:
            copy = _driver_copy(uri)
            if copy is not None:
                return copy
    return model


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


# ---- in the Python workers ----------------------------------------------------------------------


def worker_model(reference: str, shipped: bool = False, revision: str | None = None) -> Model:
    """The model, opened once per Python worker: a shipped file by its name (``SparkFiles``
    finds the worker's copy), else what ``npdistil.load`` takes."""
    return _open(SparkFiles.get(reference) if shipped else reference, revision)


@functools.lru_cache(maxsize=8)
def _open(path: str, revision: str | None) -> Model:
    """This module is imported in the workers, which Spark reuses from task to task, so the
    cache lives as long as the worker (a cache in the driver's ``__main__`` would travel with
    the UDF and start empty in every task)."""
    start = time.perf_counter()
    model = load(path, revision=revision)
    seconds = time.perf_counter() - start
    _worker_logging()
    log.info(
        "worker %d opened %s (%.0f MB) in %.2f s, %d BLAS thread%s",
        os.getpid(),
        model.path,
        model.path.stat().st_size / 1e6,
        seconds,
        threads := kernels.n_threads(),
        "" if threads == 1 else "s",
    )
    return model


@functools.cache
def _worker_logging() -> None:
    """Python workers have no logging set up: npdistil's lines go to the worker's stderr,
    which Spark copies into the executor's log (``<work dir>/<app>/<executor>/stderr`` on a
    standalone cluster), in Spark's own layout. A worker whose logging is already set up (a
    handler on ``npdistil.spark`` or the root logger) keeps it."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%y/%m/%d %H:%M:%S")
    )
    log.addHandler(handler)
    try:
        log.setLevel(os.environ.get("NPDISTIL_SPARK_LOG_LEVEL", "INFO").upper())
    except ValueError:  # not a level's name
        log.setLevel(logging.INFO)

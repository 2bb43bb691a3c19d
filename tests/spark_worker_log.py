"""Spark's Python daemon, with npdistil.spark's log written to a file (for tests/test_spark.py).

The test session starts its Python workers through this module
(``spark.python.daemon.module``). Workers are forked from the daemon, so they inherit the log
handler set up here: every model a worker opens is one line of the file, with the worker's
pid. Nothing of npdistil is imported or patched here.
"""

from __future__ import annotations

import logging
import os

if __name__ == "__main__":
    if "NPDISTIL_SPARK_WORKER_LOG" in os.environ:  # Spark Connect sessions' workers lack it
        handler = logging.FileHandler(os.environ["NPDISTIL_SPARK_WORKER_LOG"], delay=True)
        logger = logging.getLogger("npdistil.spark")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    from pyspark import daemon

    daemon.manager()

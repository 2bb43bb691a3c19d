"""Running a batch on every core: the batch is cut into one part per core, and each part runs
the whole forward pass in its own thread, with BLAS limited to one thread per call.

Why not let BLAS use every core and split only the elementwise work? Measured on a 2-core
machine, that gains nothing: between matrix products OpenBLAS's worker threads keep spinning on
the cores the elementwise chunks want, and NumPy operations short enough to stay in cache
hand the GIL back and forth more than they compute. Whole parts avoid both: each thread does
long, independent runs of matrix products and elementwise operations (NumPy releases the GIL in
both), and only meets the others at the end. One-thread BLAS on half the rows runs as fast per
core as multi-threaded BLAS on all of them.

The per-call BLAS limit is process-wide (BLAS libraries have no per-thread setting): while any
forward pass is running split, NumPy matrix products elsewhere in the process also run on one
thread. It is set through threadpoolctl when that is installed; without it, batches are not
split and run as before, BLAS threads only.

Thread safety: each call owns its parts, their outputs and its completion state; the helper
threads are shared by all callers and hold nothing between tasks, and the BLAS limit is
reference-counted (the first caller in lowers it, the last one out restores it). A caller
never waits for a helper to *start*: it takes parts itself until none are left and then waits
only for parts a helper has already begun, so concurrent callers cannot block each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import count, pairwise
from typing import Any, TypeVar

__all__ = ["n_threads", "run_parts", "even_parts", "balanced_parts"]

R = TypeVar("R")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Blas:
    """NumPy's BLAS thread count, and a process-wide, reference-counted limit to one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None
        self._controller: Any = None
        self._checked = False

    def _blas(self) -> Any:
        if not self._checked:  # once: finding the libraries scans the loaded ones (~1 ms)
            self._checked = True
            try:
                import numpy  # noqa: F401  (its BLAS must be loaded to be found)
                from threadpoolctl import ThreadpoolController

                self._controller = ThreadpoolController().select(user_api="blas")
            except Exception:  # not installed, or an unknown BLAS: don't split
                self._controller = None
        return self._controller

    def threads(self) -> int:
        """How many threads BLAS would use (1 when it cannot be limited)."""
        with self._lock:
            if self._limiter is not None:  # lowered by us right now: what it was before
                return max(1, self._limiter.get_original_num_threads()["blas"] or 1)
            blas = self._blas()
            if blas is None or not blas.lib_controllers:
                return 1
            return max(1, min(int(i["num_threads"]) for i in blas.info()))

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0 and (blas := self._blas()) is not None:
                self._limiter = blas.limit(limits=1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_BLAS = _Blas()
_CORES = _cores()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_threads() -> None:
    """In a forked child: the helper threads did not survive the fork, and a lock one of them
    held would stay held, so start afresh."""
    global _BLAS, _pool, _pool_lock
    _BLAS, _pool, _pool_lock = _Blas(), None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def n_threads() -> int:
    """Threads a batch is split between: BLAS's own thread count (so ``OPENBLAS_NUM_THREADS``
    and threadpoolctl limits are respected), at most the usable cores; 1 without threadpoolctl."""
    return max(1, min(_CORES, _BLAS.threads()))


def _helpers() -> ThreadPoolExecutor:
    """The shared helper threads, made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, _CORES - 1), thread_name_prefix="npdistil")
        return _pool


class _Job:
    """One call's parts, handed out one at a time to whichever thread asks first."""

    def __init__(self, work: Callable[[int], Any], n: int) -> None:
        self.work = work
        self.n = n
        self.results: list[Any] = [None] * n
        self.next_part = count()  # next() on itertools.count is atomic under the GIL
        self.lock = threading.Lock()
        self.pending = n
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (i := next(self.next_part)) < self.n:
            try:
                if self.error is None:
                    self.results[i] = self.work(i)
            except BaseException as e:  # re-raised in the calling thread
                self.error = e
            with self.lock:
                self.pending -= 1
                if self.pending == 0:
                    self.done.set()


def run_parts(work: Callable[[int], R], n: int) -> list[R]:
    """``[work(0), ..., work(n - 1)]``, the parts run at once on the helper threads and the
    calling one, BLAS limited to one thread each. Parts must not write to the same memory; an
    exception in one is re-raised here. One part runs in the caller alone, still with one BLAS
    thread, so that its bits never depend on what else runs in the process."""
    if n == 1:
        with _BLAS:
            return [work(0)]
    job = _Job(work, n)
    with _BLAS:
        pool = _helpers()
        for _ in range(min(n, _CORES) - 1):
            pool.submit(job.run)
        job.run()
        job.done.wait()
    if job.error is not None:
        raise job.error
    return job.results


def even_parts(n_rows: int, min_rows: int = 1) -> list[slice]:
    """Rows ``0..n_rows-1`` cut into one run of consecutive rows per thread, as even as can be,
    or a single run when splitting would not pay: parts of fewer than ``min_rows`` rows, or so
    uneven that the longest part takes longer alone than the whole on multi-threaded BLAS."""
    n = min(n_threads(), n_rows // max(min_rows, 1))
    longest = -(-n_rows // max(n, 1))
    # One-thread BLAS on a part runs ~10% faster per core than all threads on the whole.
    if n < 2 or longest * n > 1.1 * n_rows:
        return [slice(0, n_rows)]
    bounds = [n_rows * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in pairwise(bounds)]


def balanced_parts(costs: Sequence[float], min_cost: float = 0) -> list[list[int]]:
    """Indices of ``costs`` dealt into one group per thread with sums as even as can be (the
    largest first, each to the lightest group), or one group when the total is below
    ``min_cost`` per thread."""
    n = min(n_threads(), len(costs), max(1, int(sum(costs) // max(min_cost, 1e-9))))
    if n < 2:
        return [list(range(len(costs)))]
    groups: list[list[int]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        g = loads.index(min(loads))
        groups[g].append(i)
        loads[g] += costs[i]
    return [sorted(g) for g in groups]

"""Running one forward pass on every core, with results that do not depend on what else runs.

The tokens of a batch (all its sequences back to back, [N, D]) are cut into one run of rows per
thread. Each thread takes its rows through the whole encoder, and the threads meet once per
layer around the keys and values they share, since attention looks at every key of
a sequence (``transformer.py`` shows where). NumPy releases the GIL in matrix products and in long
elementwise operations, so the threads run in parallel. A short input (a few dozen tokens) is
cut the other way: every thread computes some columns of each matrix product for all the rows,
and the threads meet after each product (``model.encoder_columns``).

Every matrix product npdistil makes runs with BLAS held to one thread, whether or not the pass
is split: parallelism is npdistil's own, and that is what makes its results reproducible. BLAS
libraries compute a product with different rounding depending on their thread count (OpenBLAS's
Haswell kernels do, for example), and the thread count is process-wide, so a product left
multi-threaded would change its bits whenever another call held BLAS to one thread. With the
limit always on, and the cut into parts decided by the inputs and npdistil's thread count only,
**the same call gives the same bits, whatever else runs in the process**. The price: while a
forward pass runs, other NumPy matrix products in the same process also run on one BLAS thread.

The limit is set through OpenBLAS's own ``openblas_set_num_threads`` (found with threadpoolctl),
not through threadpoolctl's ``threadpool_limits``: threadpoolctl >= 3.8 lets only the first
thread that ever set a limit change OpenBLAS's, and silently ignores every other thread.
Other BLAS libraries go through threadpoolctl. Without either, passes are not split and BLAS
runs as configured.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = ["n_threads", "one_blas_thread", "run_together", "split_rows", "snap_rows"]

R = TypeVar("R")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---- holding BLAS to one thread -------------------------------------------------------------


class _ThreadSetting(Protocol):
    def get(self) -> int: ...
    def set(self, n: int) -> None: ...


class _OpenBlas:
    """OpenBLAS's process-wide thread count, through its own C functions."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        # NumPy's wheels rename the symbols (scipy_openblas_set_num_threads64_); plain builds don't.
        for prefix in ("scipy_", ""):
            for suffix in ("64_", "_64", ""):
                try:
                    self._get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                    self._set = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                except AttributeError:
                    continue
                self._set.argtypes, self._set.restype = [ctypes.c_int], None
                return
        raise OSError(f"{path}: no openblas_set_num_threads")

    def get(self) -> int:
        return int(self._get())

    def set(self, n: int) -> None:
        self._set(n)


class _Library:
    """Any other BLAS threadpoolctl drives (MKL, BLIS, ...): they have no such restriction."""

    def __init__(self, controller: Any) -> None:
        self._controller = controller

    def get(self) -> int:
        return int(self._controller.get_num_threads())

    def set(self, n: int) -> None:
        self._controller.set_num_threads(n)


class _AllOf:
    """Every BLAS library loaded in the process (usually one)."""

    def __init__(self, libraries: list[_ThreadSetting]) -> None:
        self._libraries = libraries

    def get(self) -> int:
        return min(lib.get() for lib in self._libraries)

    def set(self, n: int) -> None:
        for lib in self._libraries:
            lib.set(n)


def _find_blas() -> _ThreadSetting | None:
    try:
        from threadpoolctl import ThreadpoolController

        found = ThreadpoolController().select(user_api="blas").lib_controllers
        libraries: list[_ThreadSetting] = [
            _OpenBlas(lib.filepath) if lib.internal_api == "openblas" else _Library(lib)
            for lib in found
        ]
        return _AllOf(libraries) if libraries else None
    except Exception:  # not installed, or a BLAS it cannot drive: don't split
        return None


class _OneBlasThread:
    """A reference-counted, process-wide hold of BLAS at one thread: the first call in lowers
    it, the last one out restores what it was."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 1
        self._blas: _ThreadSetting | None = None
        self._found = False

    def _setting(self) -> _ThreadSetting | None:
        if not self._found:  # once: finding the library scans the loaded ones (~1 ms)
            self._blas, self._found = _find_blas(), True
        return self._blas

    def threads(self) -> int:
        """BLAS's configured thread count (not our hold of it); 1 if it cannot be held."""
        with self._lock:
            blas = self._setting()
            if blas is None:
                return 1
            return max(1, self._saved if self._users else blas.get())

    def __enter__(self) -> None:
        with self._lock:
            blas = self._setting()
            if self._users == 0 and blas is not None:
                self._saved = blas.get()
                if self._saved != 1:
                    blas.set(1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._blas is not None and self._saved != 1:
                self._blas.set(self._saved)


# ---- helper threads ---------------------------------------------------------------------------


class _Helper:
    """A parked thread that runs one task at a time, handed to it by ``start``."""

    def __init__(self) -> None:
        self._task: Callable[[], None] | None = None
        self._ready = threading.Semaphore(0)
        threading.Thread(target=self._loop, name="npdistil", daemon=True).start()

    def start(self, task: Callable[[], None]) -> None:
        self._task = task
        self._ready.release()

    def _loop(self) -> None:
        while True:
            self._ready.acquire()
            task, self._task = self._task, None
            assert task is not None
            task()
            del task  # don't keep the pass's closure (and its arrays) alive while parked
            _park(self)


_BLAS = _OneBlasThread()
_CORES = _cores()
_idle: list[_Helper] = []
_idle_lock = threading.Lock()


def _helper() -> _Helper:
    """An idle helper thread, or a new one. Every part of a pass gets a thread of its own (they
    wait for each other once per layer), so concurrent passes never wait for each other's."""
    with _idle_lock:
        if _idle:
            return _idle.pop()
    return _Helper()


def _park(helper: _Helper) -> None:
    with _idle_lock:
        _idle.append(helper)


def _forget_threads() -> None:
    """In a forked child: the helper threads did not survive the fork, and a lock one of them
    held would stay held, so start afresh."""
    global _BLAS, _idle, _idle_lock
    _BLAS, _idle, _idle_lock = _OneBlasThread(), [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


# ---- the public face ---------------------------------------------------------------------------


def n_threads() -> int:
    """Threads a pass is split between: BLAS's configured thread count (so
    ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and threadpoolctl limits are respected), at
    most the usable cores; 1 when BLAS cannot be held to one thread."""
    return max(1, min(_CORES, _BLAS.threads()))


def one_blas_thread() -> _OneBlasThread:
    """``with one_blas_thread():`` BLAS held to one thread (reference-counted, process-wide).

    Every npdistil product runs inside it, the task heads', the pooler's and sentence
    modules' after a pass as much as the pass's own: their bits then never depend on what
    else runs, and OpenBLAS never starts its own threads between two passes. Those threads
    spin for a while after each product (~0.1 s), and one small two-thread product after a
    pass (a pooler, a classifier) made the next pass, split over the same two cores, ~50 ms
    slower (MPNet, 1 x 128: 139 -> 192 ms; measured)."""
    return _BLAS


def _no_wait() -> None:
    pass


def run_together(work: Callable[[int, Callable[[], object]], R], n: int) -> list[R]:
    """``[work(0, sync), ..., work(n - 1, sync)]``, every part in a thread of its own at the same
    time (part 0 in the caller), BLAS held to one thread. ``sync()`` returns once every part has
    called it. An exception in a part is re-raised here (the other parts' waits are broken)."""
    with _BLAS:
        if n == 1:
            return [work(0, _no_wait)]
        barrier = threading.Barrier(n)
        results: list[Any] = [None] * n
        errors: list[BaseException | None] = [None] * n
        finished = threading.Semaphore(0)

        def part(i: int) -> None:
            try:
                results[i] = work(i, barrier.wait)
            except BaseException as exc:  # re-raised by the caller
                errors[i] = exc
                barrier.abort()  # parts waiting for this one give up
            finally:
                if i:
                    finished.release()

        for i in range(1, n):
            _helper().start(lambda i=i: part(i))  # type: ignore[misc]
        part(0)
        for _ in range(1, n):
            finished.acquire()
    first = next((e for e in errors if e and not isinstance(e, threading.BrokenBarrierError)), None)
    if first is not None or any(errors):
        raise first or next(e for e in errors if e)  # type: ignore[misc]
    return results


def split_rows(costs: np.ndarray | Sequence[float], parts: int, min_rows: int) -> list[slice]:
    """Rows ``0..N-1`` (``costs[i]`` the work of row ``i``) cut into at most ``parts`` runs of
    consecutive rows with about equal work, each at least ``min_rows`` long (one run when that
    leaves fewer than two).

    >>> split_rows([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], parts=2, min_rows=2)
    [slice(0, 5, None), slice(5, 10, None)]
    >>> split_rows([1, 1, 1, 1, 1, 1, 1, 1, 1, 5], parts=2, min_rows=2)
    [slice(0, 7, None), slice(7, 10, None)]
    """
    n_rows = len(costs)
    n = min(parts, n_rows // max(min_rows, 1))
    if n < 2:
        return [slice(0, n_rows)]
    total = np.cumsum(np.asarray(costs, dtype=np.float64))
    # Part k ends where the running cost first reaches k/n of the total.
    ends = np.searchsorted(total, total[-1] * np.arange(1, n) / n, side="left") + 1
    bounds = [0, *(int(e) for e in ends), n_rows]
    for k in range(1, n):  # keep every part at least min_rows long
        bounds[k] = min(max(bounds[k], bounds[k - 1] + min_rows), n_rows - (n - k) * min_rows)
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def snap_rows(runs: list[slice], costs: np.ndarray, starts: np.ndarray) -> list[slice] | None:
    """``runs`` moved to end where a sequence starts (``starts``: the first row of every
    sequence), if their work then stays within 10% of even; None if it would not.

    Parts that hold whole sequences never read each other's rows, so they need not wait for
    each other (see ``model.encoder``).

    >>> snap_rows([slice(0, 10), slice(10, 20)], np.ones(20), np.array([0, 4, 9, 15]))
    [slice(0, 9, None), slice(9, 20, None)]
    >>> snap_rows([slice(0, 10), slice(10, 20)], np.ones(20), np.array([0, 4, 15])) is None
    True
    """
    if len(runs) < 2:
        return runs
    n_rows = runs[-1].stop
    total = np.concatenate([[0.0], np.cumsum(costs, dtype=np.float64)])
    inner = starts[(starts > 0) & (starts < n_rows)]
    if not len(inner):
        return None
    bounds = [0]
    for r in runs[:-1]:  # the nearest sequence start to each cut
        k = int(np.abs(inner - r.stop).argmin())
        bounds.append(max(int(inner[k]), bounds[-1]))
    bounds.append(n_rows)
    work = np.diff(total[bounds])
    if work.min() <= 0 or work.max() > 1.1 * total[-1] / len(runs):
        return None
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]

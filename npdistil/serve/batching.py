"""Dynamic batching: every request's inputs go into one queue, and one worker runs them through
the model in batches bounded by a token budget, first come first served.

As in text-embeddings-inference's queue, there is no wait timer: when a forward pass ends, the
worker takes at once whatever has arrived in the meantime, so the next batch forms while one
runs, and a lone request never waits for company. Tokens are counted without padding, since
``forward_packed`` runs the sequences back to back. Inputs of one request may be split between
batches, and share them with other requests' inputs. A request whose client has gone away is
cancelled, and its inputs still queued are dropped before they cost a forward pass.

Everything here runs on the event loop except the forward pass itself, which runs in the one
model thread (NumPy releases the GIL there, and ``forward_packed`` splits its work between the
cores on its own).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .metrics import Metrics
from .pipeline import Job

__all__ = ["Batcher"]

log = logging.getLogger("npdistil.serve")


class _Entry:
    """One input waiting for the model, and where its result goes."""

    __slots__ = ("job", "tokens", "future", "since")

    def __init__(self, job: Job, future: asyncio.Future[np.ndarray]) -> None:
        self.job, self.future = job, future
        self.tokens = len(job.ids)
        self.since = time.perf_counter()


class Batcher:
    """The queue and its one model worker.

    ``run(jobs)`` is the forward pass (``Pipeline.run``); a batch holds at most
    ``max_batch_tokens`` tokens and ``max_batch_requests`` inputs (None: no count limit), and
    never mixes inputs with token types and without (``forward_packed`` takes all or none).
    """

    def __init__(
        self,
        run: Callable[[Sequence[Job]], list[np.ndarray]],
        metrics: Metrics,
        max_batch_tokens: int,
        max_batch_requests: int | None = None,
        hold_file: Path | None = None,
    ) -> None:
        self._run, self._metrics = run, metrics
        self.max_batch_tokens, self.max_batch_requests = max_batch_tokens, max_batch_requests
        self._hold_file = hold_file
        self._queue: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="npdistil-model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._work(), name="npdistil-batcher")

    async def close(self) -> None:
        """Stop the worker; a forward pass under way finishes first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def alive(self) -> bool:
        """Whether the worker is running (false before ``start`` and if it ever died)."""
        return self._task is not None and not self._task.done()

    def submit(self, jobs: Sequence[Job]) -> asyncio.Future[list[np.ndarray]]:
        """Queue the jobs; a future of their results, in order. Cancelling it (the client went
        away) cancels the jobs still queued: the worker drops them."""
        loop = asyncio.get_running_loop()
        entries = [_Entry(job, loop.create_future()) for job in jobs]
        self._queue.extend(entries)
        self._metrics.queue_size.add(len(entries))
        self._wake.set()
        return asyncio.gather(*(e.future for e in entries))

    def fail_queued(self, error: BaseException) -> int:
        """Answer every queued input with ``error`` (a drain out of time); how many there were."""
        n = 0
        while self._queue:
            entry = self._queue.popleft()
            self._metrics.queue_size.add(-1)
            if not entry.future.done():
                entry.future.set_exception(error)
                n += 1
        return n

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._held()
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outs = await loop.run_in_executor(self._executor, self._run, [e.job for e in batch])
            except Exception as exc:  # a bug, not an input: answer these, keep serving others
                log.error(f"forward pass failed:\n{traceback.format_exc()}")
                for e in batch:
                    if not e.future.done():
                        e.future.set_exception(exc)
                continue
            self._metrics.inference_duration.observe(time.perf_counter() - started)
            for e, out in zip(batch, outs, strict=True):
                if not e.future.done():  # its client may have gone during the pass
                    e.future.set_result(out)

    def _take(self) -> list[_Entry]:
        """The next batch from the head of the queue: in arrival order, until the next input
        would overrun the token budget or the input count (a batch always takes at least one
        input). Inputs of cancelled requests are dropped on the way."""
        batch: list[_Entry] = []
        tokens, typed = 0, False
        now = time.perf_counter()
        while self._queue:
            entry = self._queue[0]
            if entry.future.done():  # cancelled: its client disconnected
                self._queue.popleft()
                self._metrics.queue_size.add(-1)
                self._metrics.dropped.inc()
                continue
            has_types = entry.job.types is not None
            if batch and (
                tokens + entry.tokens > self.max_batch_tokens
                or has_types != typed
                or len(batch) == self.max_batch_requests
            ):
                break
            self._queue.popleft()
            batch.append(entry)
            tokens, typed = tokens + entry.tokens, has_types
            self._metrics.queue_duration.observe(now - entry.since)
        if batch:
            self._metrics.queue_size.add(-len(batch))
            self._metrics.batch_inputs.observe(len(batch))
            self._metrics.batch_tokens.observe(tokens)
            self._metrics.tokens.inc(tokens)
        return batch

    async def _held(self) -> None:
        """Tests only: wait while the hold file exists (``Settings.hold_file``)."""
        if self._hold_file is None:
            return
        while self._hold_file.exists():
            await asyncio.sleep(0.01)

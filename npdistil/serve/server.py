"""Running the app with uvicorn: a warm model before the port opens, the bound address on
stderr, and a drain on SIGTERM or SIGINT.

The drain: the first signal makes ``/ready`` answer 503 and new work 503 (a load balancer
stops sending), while every request already admitted is answered; then the server stops and the
process exits 0. The port stays open meanwhile, so probes see the drain. If the accepted
requests are not done within ``drain_timeout`` seconds, those still queued are answered 503,
the server stops and the exit status is 1. A second signal stops at once.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from ..api import Model
from .app import Service
from .pipeline import SENTENCE
from .protocol import EmbedRequest
from .settings import Settings

__all__ = ["serve"]

log = logging.getLogger("npdistil.serve")

# After a drain, uvicorn waits this long for connections to finish before cancelling them.
_CLOSE_GRACE = 2.0


class _Server(uvicorn.Server):
    """uvicorn's server, with npdistil's drain instead of its immediate stop."""

    def __init__(self, config: uvicorn.Config, service: Service, drain_timeout: float) -> None:
        super().__init__(config)
        self.service, self.drain_timeout = service, drain_timeout
        self.signalled = False
        self.deadline = 0.0
        self.gave_up = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's: it would raise the signal again after stopping (exit status 143).
        if self.signalled:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self.signalled = True
        self.deadline = time.monotonic() + self.drain_timeout
        log.info(f"{signal.Signals(sig).name}: draining, then stopping (again to stop now)")

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info(f"serving {self.service.name} on http://{shown}:{port} (Ctrl+C to drain and stop)")

    async def on_tick(self, counter: int) -> bool:
        if self.signalled:
            service = self.service
            if not service.draining:
                service.begin_drain()
            if service.in_flight == 0:
                return True
            if time.monotonic() > self.deadline:
                if self.gave_up:
                    return True
                self.gave_up = True
                n = service.fail_queued()
                log.info(
                    f"drain: {service.in_flight} request(s) not done after "
                    f"{self.drain_timeout:g} s; {n} queued input(s) answered 503"
                )
        return await super().on_tick(counter)


def warm_up(service: Service) -> None:
    """One tiny forward pass, so that the first request does not pay for first use."""
    pipeline = service.pipeline
    jobs = pipeline.text_jobs(EmbedRequest(["warm up"], True), "input", SENTENCE, False)
    pipeline.run(jobs)


def serve(model: Model, settings: Settings) -> int:
    """Serve ``model`` until a signal, then drain; the exit status (0: every accepted request
    answered; 1: the drain ran out of time)."""
    service = Service(model, settings)
    warm_up(service)
    config = uvicorn.Config(
        service.app(),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=int(_CLOSE_GRACE),
    )
    server = _Server(config, service, settings.drain_timeout)
    server.run()
    log.info("stopped")
    return 1 if server.gave_up else 0

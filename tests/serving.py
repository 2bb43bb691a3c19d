"""A real ``npdistil serve`` in a subprocess, for the server's tests: on 127.0.0.1, port 0 (the
system picks; the startup line names it), its log in a file, stopped by its pid.

Waits are bounded in time and count; nothing here sleeps for a fixed time to let something
happen: a test waits for a state it can see (a metric, a status, the process's exit).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

STARTUP_SECONDS = 120  # a cold start converts the checkpoint; a loaded machine is slow
WAIT_SECONDS = 60
_LINE = re.compile(r"serving .* on http://127\.0\.0\.1:(\d+)")


class Server:
    """``npdistil serve --model MODEL ARGS`` started in ``folder`` (its log, its cache, its
    hold file). ``hold()`` / ``release()`` stop and restart the model worker (the server's
    test hook), so that tests put requests in the queue without any timing."""

    def __init__(
        self, model: Path | str, folder: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "server.log"
        self.hold_path = folder / "hold"
        environment = {
            **{k: v for k, v in os.environ.items() if k != "NPDISTIL_API_KEY"},
            "NPDISTIL_CACHE": str(folder / "cache"),
            "HF_HUB_OFFLINE": "1",
            "NPDISTIL_SERVE_HOLD_FILE": str(self.hold_path),
            **(env or {}),
        }
        command = [sys.executable, "-m", "npdistil.cli", "serve", "--model", str(model)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", "0", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        self.url = f"http://127.0.0.1:{self._port()}"
        self.client = httpx.Client(base_url=self.url, timeout=WAIT_SECONDS)

    def _port(self) -> int:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            found = _LINE.search(self.log())
            if found:
                return int(found[1])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the server did not start; its log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ---- the test hook -----------------------------------------------------------------------

    def hold(self) -> None:
        self.hold_path.touch()

    def release(self) -> None:
        self.hold_path.unlink(missing_ok=True)

    # ---- metrics -----------------------------------------------------------------------------

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, parsed by prometheus_client: (name, labels) -> value."""
        text = self.client.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, what: str, ok: Callable[[], bool]) -> None:
        """Poll ``ok`` until true (bounded: WAIT_SECONDS, and one poll per 20 ms)."""
        for _ in range(int(WAIT_SECONDS / 0.02)):
            if ok():
                return
            time.sleep(0.02)
        raise AssertionError(f"waited {WAIT_SECONDS} s for {what}; server log:\n{self.log()}")

    # ---- stopping ----------------------------------------------------------------------------

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server did not exit; its log:\n{self.log()}") from None

    def kill(self) -> None:
        """End the process by its pid, whatever its state."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)
        if hasattr(self, "client"):
            self.client.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
        self.kill()


def post(server: Server, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return server.client.post(path, json=body, **kwargs)

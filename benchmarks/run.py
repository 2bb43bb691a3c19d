"""npdistil against PyTorch and ONNX Runtime on the CPU, side by side, in one run (issue 3).

    pip install -e ".[bench]"
    python benchmarks/run.py    # ~15 min on an idle 2-core machine; --quick for a smoke run

Same machine, same thread count (2 by default), same full-size distilbert-base-cased-shaped
weights for all three systems. Each system runs in its own process; timed runs of the systems
are interleaved, so a noisy neighbour slows all of them alike. Prints the machine, the BLAS
build and threads, every measurement and a table of issue 3's targets (MET / NOT MET) as
markdown, and writes everything to benchmarks/out/results.json.

Measured: throughput at batch x tokens 1x16, 1x128, 8x128, 32x128 (random ids, full masks);
the float32 matmul peak and npdistil's fraction of the roofline; the paragraphs of
``pydoc_data.topics`` as users run each system; start-up of a new process to the first
embedding; peak RSS of a process embedding one 32x128 batch; npdistil's max abs error
against PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SYSTEM_NAMES = ("npdistil", "pytorch", "onnxruntime")
LABEL = {"npdistil": "npdistil", "pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Set on some machines here to work around old OpenBLAS bugs; they slow a current NumPy.
OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SHAPES = ((1, 16), (1, 128), (8, 128), (32, 128))
# The model: distilbert-base-cased.
D, F, N_LAYERS, T_ROOF = 768, 3072, 6, 128
PEAK_SHAPE = (4096, 768, 3072)  # the FFN's first matmul at 32 x 128 tokens
MODEL_SHAPES = ((1024, 768, 2304), (1024, 768, 3072), (1024, 3072, 768), (4096, 768, 2304))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def set_environment(threads: int, keep_openblas: bool) -> dict[str, Any]:
    """Thread counts and OpenBLAS tuning for this process and every child, set before NumPy
    (or any BLAS) is imported. Returns what the environment held before."""
    before = {k: os.environ.get(k) for k in (*THREAD_VARIABLES, *OPENBLAS_TUNING)}
    for k in THREAD_VARIABLES:
        os.environ[k] = str(threads)
    os.environ["NPDISTIL_BENCH_THREADS"] = str(threads)
    if not keep_openblas:
        for k in OPENBLAS_TUNING:
            os.environ.pop(k, None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return before


# ---- processes --------------------------------------------------------------------------------


def _context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("spawn")


def _receive(conn: Any, what: str) -> Any:
    status, value = conn.recv()
    if status != "ok":
        raise RuntimeError(f"{what} failed in its process:\n{value}")
    return value


def run_in_child(function: Any, *args: Any) -> Any:
    """``function(*args)`` in a fresh process (so that this one never imports torch)."""
    import systems

    parent, child = _context().Pipe()
    process = _context().Process(target=systems.call_in_child, args=(child, function, args))
    process.start()
    child.close()
    try:
        return _receive(parent, function.__name__)
    finally:
        process.join()


class Worker:
    """One system in its own process; ``call(method, *args)`` runs a method there."""

    def __init__(self, name: str, assets: dict[str, Any]) -> None:
        import systems

        self.name = name
        self.conn, child = _context().Pipe()
        start = time.perf_counter()
        self.process = _context().Process(
            target=systems.serve, args=(name, assets, child), daemon=True
        )
        self.process.start()
        child.close()  # so that a crashed worker reads as EOFError here, not a hang
        _receive(self.conn, f"loading {name}")
        self.load_seconds = time.perf_counter() - start

    # Over every call: wall seconds, and CPU seconds that other processes took meanwhile.
    wall = 0.0
    others = 0.0

    def call(self, method: str, *args: Any) -> Any:
        before = self._cpu()
        self.conn.send((method, args))
        result = _receive(self.conn, f"{self.name}.{method}")
        after = self._cpu()
        Worker.wall += after[0] - before[0]
        Worker.others += max(0.0, (after[1] - before[1]) - (after[2] - before[2]))
        return result

    def _cpu(self) -> tuple[float, float, float]:
        """Now, the machine's busy CPU seconds, and this worker's plus the parent's."""
        import resource

        ticks = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks
            with open(f"/proc/{self.process.pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            own = (int(stat[11]) + int(stat[12])) / ticks
        except (OSError, ValueError, IndexError):
            busy = own = 0.0
        me = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), busy, own + me.ru_utime + me.ru_stime

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=30)


# ---- measurements -----------------------------------------------------------------------------


def random_batch(batch: int, tokens: int, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(106, 28996, size=(batch, tokens), dtype=np.int64)  # ordinary tokens
    return ids, np.ones_like(ids)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class Quiet:
    """Before a timed run, waits (up to a total budget) until other processes leave the CPU
    idle: the machine may be shared, and a busy neighbour slows multi-threaded BLAS far more
    than its share (OpenBLAS threads spin at their barriers)."""

    def __init__(self, budget_seconds: float, settle: float) -> None:
        self.budget, self.settle, self.waited = budget_seconds, settle, 0.0

    @staticmethod
    def busy_share(seconds: float) -> float:
        def sample() -> tuple[int, int]:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            return sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])

        try:
            b0, t0 = sample()
            time.sleep(seconds)
            b1, t1 = sample()
        except (OSError, ValueError):
            time.sleep(seconds)
            return 0.0
        return (b1 - b0) / max(t1 - t0, 1)

    def wait(self) -> None:
        """Sleep ``settle`` (the previous system's threads stop spinning), then until the
        machine has been idle for a moment."""
        time.sleep(self.settle)
        while self.busy_share(0.3) > 0.1 and self.waited < self.budget:
            if self.waited == 0:
                log("  another process is using the CPU: waiting for it ...")
            time.sleep(1.0)
            self.waited += 1.3


def measure_shapes(
    workers: dict[str, Worker],
    rounds: int,
    round_seconds: float,
    quiet: Quiet,
    after_each: Any = None,
) -> dict[str, Any]:
    """Per shape: warm-up, then ``rounds`` rounds in which each system (in rotating order)
    makes enough back-to-back calls to fill about ``round_seconds``. Median per call."""
    results: dict[str, Any] = {}
    names = list(workers)
    for b, t in SHAPES:
        ids, mask = random_batch(b, t)
        calls = {}
        for name, w in workers.items():
            warm = w.call("time_forward", ids, mask, 3)
            calls[name] = max(1, min(40, round(round_seconds / min(warm))))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                quiet.wait()
                samples[name] += workers[name].call("time_forward", ids, mask, calls[name])
        shape = {}
        for name in names:
            s = summary(samples[name])
            s["tokens_per_s"] = b * t / s["median"]
            s["ms"] = 1000 * s["median"]
            shape[name] = s
        results[f"{b}x{t}"] = shape
        log(f"  {b}x{t}: " + ", ".join(f"{n} {shape[n]['tokens_per_s']:,.0f} tok/s" for n in names))
        if after_each is not None:
            after_each()
    return results


def flops_per_token(t: int) -> dict[str, Any]:
    """Matrix-product FLOPs per token of one forward at sequence length ``t`` (2 per
    multiply-add): per layer, the linears 2 (4 D^2 + 2 D F) and attention's Q K^T and P V
    2 (2 t D); elementwise work, the embedding gather and biases are left out."""
    linears = 2 * (4 * D * D + 2 * D * F)
    attention = 2 * 2 * t * D
    return {
        "formula": "n_layers * (2*(4*D*D + 2*D*F) + 2*(2*T*D)), D=768, F=3072, n_layers=6",
        "T": t,
        "linears_per_layer": linears,
        "attention_per_layer": attention,
        "flops_per_token": N_LAYERS * (linears + attention),
    }


def measure_peak(npdistil: Worker, n: int, quiet: Quiet) -> dict[str, Any]:
    quiet.wait()
    rates = npdistil.call("matmul_rates", [PEAK_SHAPE, *MODEL_SHAPES], n)
    shapes = [PEAK_SHAPE, *MODEL_SHAPES]
    return {
        f"{m}x{k}@{k}x{c}": {"max": max(r), "median": statistics.median(r)}
        for (m, k, c), r in zip(shapes, rates, strict=True)
    }


def token_stats(texts: list[str], folder: str) -> dict[str, Any]:
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    lengths = np.array([len(e.ids) for e in tok.encode_batch(texts)])  # with [CLS], [SEP]
    kept = np.minimum(lengths, 512)

    def padded(order: list[int]) -> int:
        return sum(
            len(order[i : i + 32]) * int(kept[order[i : i + 32]].max())
            for i in range(0, len(order), 32)
        )

    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    by_tokens = sorted(range(len(texts)), key=lambda i: kept[i])
    return {
        "texts": len(texts),
        "median_tokens": float(np.median(lengths)),
        "p95_tokens": float(np.percentile(lengths, 95)),
        "max_tokens": int(lengths.max()),
        "over_512": int((lengths > 512).sum()),
        "real_tokens": int(kept.sum()),
        "processed_tokens": {
            "corpus_order": padded(list(range(len(texts)))),
            "sorted_by_characters": padded(by_chars),
            "sorted_by_tokens": padded(by_tokens),
        },
    }


def measure_corpus(
    workers: dict[str, Worker], texts: list[str], stats: dict[str, Any], quiet: Quiet
) -> dict[str, Any]:
    """Each way of running the corpus once (after a small warm-up), embeddings kept for a
    parity check."""
    runs = (
        ("npdistil", "npdistil", True, "model.encode(texts, batch_size=32): sorted by tokens"),
        ("pytorch_corpus_order", "pytorch", False, "batches of 32 in corpus order, padded"),
        ("pytorch_sorted", "pytorch", True, "batches of 32 sorted by length (as ST)"),
        ("onnxruntime_sorted", "onnxruntime", True, "batches of 32 sorted by length"),
    )
    for name in {system for _, system, _, _ in runs}:
        workers[name].call("embed_corpus", texts[:64], 32, True)
    out: dict[str, Any] = {}
    embeddings = {}
    for key, system, sort, how in runs:
        quiet.wait()
        vectors, seconds = workers[system].call("embed_corpus", texts, 32, sort)
        embeddings[key] = vectors
        out[key] = {
            "system": system,
            "batching": how,
            "seconds": seconds,
            "tokens_per_s": stats["real_tokens"] / seconds,
        }
        log(f"  corpus {key}: {seconds:.1f} s, {out[key]['tokens_per_s']:,.0f} real tok/s")
    import numpy as np

    out["npdistil_vs_pytorch_max_abs_error"] = float(
        np.abs(embeddings["npdistil"] - embeddings["pytorch_sorted"]).max()
    )
    return out


STARTUP_CODE = {
    "npdistil": (
        "import npdistil\n"
        "m = npdistil.load({npdistil_file!r})\n"
        "print('EMBEDDING', m.encode(['Hello world!'])[0][:3], flush=True)\n"
    ),
    "pytorch": (
        "import torch\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "torch.set_num_threads({threads})\n"
        "tok = AutoTokenizer.from_pretrained({folder!r})\n"
        "model = AutoModel.from_pretrained({folder!r}).eval()\n"
        "batch = tok(['Hello world!'], return_tensors='pt')\n"
        "with torch.inference_mode():\n"
        "    h = model(**batch).last_hidden_state\n"
        "print('EMBEDDING', h.mean(1)[0, :3].numpy(), flush=True)\n"
    ),
    "onnxruntime": (
        "import numpy as np\n"
        "import onnxruntime as ort\n"
        "from tokenizers import Tokenizer\n"
        "tok = Tokenizer.from_file({folder!r} + '/tokenizer.json')\n"
        "o = ort.SessionOptions()\n"
        "o.intra_op_num_threads = {threads}\n"
        "s = ort.InferenceSession({onnx!r}, o, providers=['CPUExecutionProvider'])\n"
        "e = tok.encode('Hello world!')\n"
        "feed = {{'input_ids': np.array([e.ids]),\n"
        "        'attention_mask': np.array([e.attention_mask])}}\n"
        "print('EMBEDDING', s.run(None, feed)[0].mean(1)[0, :3], flush=True)\n"
    ),
}

RSS_CODE = {
    "npdistil": (
        "import npdistil\n"
        "m = npdistil.load({npdistil_file!r})\n"
        "h = m(ids, mask).last_hidden_state\n"
    ),
    "pytorch": (
        "import torch\n"
        "from transformers import AutoModel\n"
        "torch.set_num_threads({threads})\n"
        "model = AutoModel.from_pretrained({folder!r}).eval()\n"
        "with torch.inference_mode():\n"
        "    h = model(input_ids=torch.from_numpy(ids),"
        " attention_mask=torch.from_numpy(mask)).last_hidden_state\n"
    ),
    "onnxruntime": (
        "import onnxruntime as ort\n"
        "o = ort.SessionOptions()\n"
        "o.intra_op_num_threads = {threads}\n"
        "s = ort.InferenceSession({onnx!r}, o, providers=['CPUExecutionProvider'])\n"
        "h = s.run(None, {{'input_ids': ids, 'attention_mask': mask}})[0]\n"
    ),
}
RSS_PRELUDE = (
    "import resource\n"
    "import numpy as np\n"
    "ids = np.random.default_rng(0).integers(106, 28996, size=(32, 128), dtype=np.int64)\n"
    "mask = np.ones_like(ids)\n"
)
RSS_EPILOGUE = (
    "assert h.shape == (32, 128, 768)\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def time_startup(code: str) -> float:
    """Seconds from launching ``python -c code`` to its first embedding on stdout."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    seconds = None
    for line in process.stdout:
        if line.startswith("EMBEDDING"):
            seconds = time.perf_counter() - start
            break
    _, err = process.communicate()
    if seconds is None or process.returncode != 0:
        raise RuntimeError(f"start-up run failed ({process.returncode}):\n{code}\n{err}")
    return seconds


def measure_startup(fields: dict[str, Any], runs: int, quiet: Quiet) -> dict[str, Any]:
    """Fresh processes, the systems taking turns; the first round only warms the page cache."""
    codes = {name: STARTUP_CODE[name].format(**fields) for name in SYSTEM_NAMES}
    for code in codes.values():
        time_startup(code)
    times: dict[str, list[float]] = {name: [] for name in SYSTEM_NAMES}
    for _ in range(runs):
        for name, code in codes.items():
            quiet.wait()
            times[name].append(time_startup(code))
    out = {name: summary(t) for name, t in times.items()}
    log("  start-up: " + ", ".join(f"{n} {out[n]['median']:.2f} s" for n in SYSTEM_NAMES))
    return out


def measure_rss(fields: dict[str, Any], quiet: Quiet) -> dict[str, Any]:
    out = {}
    for name in SYSTEM_NAMES:
        code = RSS_PRELUDE + RSS_CODE[name].format(**fields) + RSS_EPILOGUE
        quiet.wait()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        line = [x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB")]
        if done.returncode != 0 or not line:
            raise RuntimeError(f"RSS run of {name} failed:\n{done.stderr}")
        out[name] = {"peak_rss_mb": int(line[0].split()[1]) / 1024}
    log("  peak RSS: " + ", ".join(f"{n} {out[n]['peak_rss_mb']:.0f} MB" for n in SYSTEM_NAMES))
    return out


def measure_parity(workers: dict[str, Worker]) -> dict[str, Any]:
    import numpy as np

    ids, mask = random_batch(8, 128, seed=1)
    ref = workers["pytorch"].call("forward", ids, mask)
    mine = workers["npdistil"].call("forward", ids, mask)
    ort_out = workers["onnxruntime"].call("forward", ids, mask)
    # and a padded batch: rows of 128, 97, 40 and 5 tokens
    lengths = (128, 97, 40, 5)
    pids, _ = random_batch(len(lengths), 128, seed=2)
    pmask = (np.arange(128)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    pids = pids * pmask
    pref = workers["pytorch"].call("forward", pids, pmask)
    pmine = workers["npdistil"].call("forward", pids, pmask)
    keep = pmask.astype(bool)
    return {
        "input": "8x128 random ids, full mask",
        "npdistil_vs_pytorch": float(np.abs(mine - ref).max()),
        "onnxruntime_vs_pytorch": float(np.abs(ort_out - ref).max()),
        "padded_4x128_npdistil_vs_pytorch_real_tokens": float(
            np.abs(pmine[keep] - pref[keep]).max()
        ),
    }


# ---- the machine ------------------------------------------------------------------------------


def machine(before: dict[str, Any], threads: int) -> dict[str, Any]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return {
        "cpu": info.get("model name", platform.processor() or "unknown"),
        "cpu_family_model": f"family {info.get('cpu family')} model {info.get('model')}",
        "cpu_mhz": info.get("cpu MHz"),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "simd": simd,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
        "environment_before": before,
        "openblas_tuning_in_effect": {k: os.environ.get(k) for k in OPENBLAS_TUNING},
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---- report -----------------------------------------------------------------------------------


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 3's targets, each with the measured ratio."""
    rows = []

    def add(measure: str, target: str, value: float, ok: bool, shown: str) -> None:
        rows.append(
            {"measure": measure, "target": target, "value": value, "met": ok, "shown": shown}
        )

    for shape in ("8x128", "32x128"):
        s = r["throughput"][shape]
        for peer in ("pytorch", "onnxruntime"):
            ratio = s["npdistil"]["tokens_per_s"] / s[peer]["tokens_per_s"]
            add(
                f"throughput {shape} vs {LABEL[peer]}",
                ">= 1.05x",
                ratio,
                ratio >= 1.05,
                f"{ratio:.2f}x",
            )
        frac = r["roofline"]["fraction"][shape]
        add(
            f"throughput {shape}, share of roofline",
            ">= 85%",
            frac,
            frac >= 0.85,
            f"{100 * frac:.0f}%",
        )
    for shape in ("1x16", "1x128"):
        s = r["throughput"][shape]
        ratio = s["npdistil"]["median"] / s["onnxruntime"]["median"]
        add(f"latency {shape} vs ONNX Runtime", "<= 1.0x", ratio, ratio <= 1.0, f"{ratio:.2f}x")
    if "corpus" in r:
        c = r["corpus"]
        for key, target in (("pytorch_corpus_order", 2.0), ("pytorch_sorted", 1.2)):
            ratio = c["npdistil"]["tokens_per_s"] / c[key]["tokens_per_s"]
            label = "padded, corpus order" if key == "pytorch_corpus_order" else "length-sorted"
            add(
                f"corpus vs PyTorch {label}",
                f">= {target}x",
                ratio,
                ratio >= target,
                f"{ratio:.2f}x",
            )
    s = r["startup"]
    ratio = s["npdistil"]["median"] / s["pytorch"]["median"]
    add("start-up vs PyTorch", "<= 1/8 (0.125x)", ratio, ratio <= 0.125, f"{ratio:.3f}x")
    m = r["peak_rss"]
    ratio = m["npdistil"]["peak_rss_mb"] / m["pytorch"]["peak_rss_mb"]
    add("peak RSS 32x128 vs PyTorch", "<= 0.45x", ratio, ratio <= 0.45, f"{ratio:.2f}x")
    err = r["parity"]["npdistil_vs_pytorch"]
    add("max abs error vs PyTorch (8x128)", "<= 1e-4", err, err <= 1e-4, f"{err:.1e}")
    return rows


def markdown(r: dict[str, Any]) -> str:
    m, sysinfo = r["machine"], r["systems"]
    npd = sysinfo["npdistil"]
    pools = npd.get("threadpools", [])
    blas = (
        ", ".join(
            f"{p.get('internal_api')} {p.get('version')} (kernel {p.get('architecture')}, "
            f"{p.get('num_threads')} threads, {p.get('threading_layer')})"
            for p in pools
        )
        or "unknown"
    )
    build = npd.get("numpy_blas_build", {})
    tuning = m["environment_before"]
    tuning_text = ", ".join(f"{k}={tuning.get(k) or '(unset)'}" for k in OPENBLAS_TUNING)
    in_effect = ", ".join(
        f"{k}={v or '(unset)'}" for k, v in m["openblas_tuning_in_effect"].items()
    )
    torch_info = sysinfo["pytorch"]
    lines = [
        "### Machine",
        "",
        f"- CPU: {m['cpu']} ({m.get('cpu_family_model')}, {m.get('cpu_mhz')} MHz), "
        f"{m['cpu_count']} cores ({', '.join(m['simd'])}); "
        f"{m['platform']}; Python {m['python']}",
        f"- Threads: {m['threads']} for every system (OMP/OPENBLAS/MKL_NUM_THREADS, "
        "torch.set_num_threads, ORT intra_op_num_threads)",
        f"- NumPy {npd['numpy']}, BLAS: {blas}; NumPy's build: "
        f"{build.get('openblas configuration') or build.get('name', 'unknown')}",
        f"- OpenBLAS tuning variables found: {tuning_text}; in effect for the run: {in_effect}",
        f"- PyTorch {torch_info['torch']} ({torch_info['attn_implementation']} attention, "
        f"{torch_info['threads']} threads), transformers {torch_info['transformers']}; "
        f"ONNX Runtime {sysinfo['onnxruntime']['onnxruntime']} (fp32, CPU provider, "
        "ORT_ENABLE_ALL); npdistil " + npd["version"],
        f"- Load average at start {r['load_average']['start']}, at end "
        f"{r['load_average']['end']}; other processes took "
        f"{100 * r['other_processes']['share_during_timed_calls']:.1f}% of the CPU during the "
        "timed calls (the harness "
        f"waited {r['other_processes']['seconds_waited_for_quiet']:.0f} s for quiet); "
        f"run took {r['seconds'] / 60:.1f} min" + (" (--quick)" if r["quick"] else ""),
        "",
        "### Throughput and latency (random ids, full masks; median per call)",
        "",
        "| batch x tokens | npdistil | PyTorch | ONNX Runtime | npdistil/PyTorch | npdistil/ORT |",
        "|---|---|---|---|---|---|",
    ]
    for shape, s in r["throughput"].items():
        cells = [f"{s[n]['tokens_per_s']:,.0f} tok/s ({s[n]['ms']:.1f} ms)" for n in SYSTEM_NAMES]
        ratios = [
            f"{s['npdistil']['tokens_per_s'] / s[p]['tokens_per_s']:.2f}x"
            for p in ("pytorch", "onnxruntime")
        ]
        lines.append(f"| {shape.replace('x', ' x ')} | " + " | ".join(cells + ratios) + " |")
    roof = r["roofline"]
    fpt = roof["flops"]
    lines += [
        "",
        "Ratios are npdistil's tokens/s over the peer's (above 1: npdistil is faster).",
        "",
        "### Ceiling",
        "",
        f"- float32 matmul peak of NumPy, {PEAK_SHAPE[0]}x{PEAK_SHAPE[1]} @ "
        f"{PEAK_SHAPE[1]}x{PEAK_SHAPE[2]}: **{roof['peak_gflops']:.0f} GFLOP/s** (best of "
        "its timings at the start, after each shape and at the end of the run)",
        f"- FLOPs per token at T={fpt['T']}: {fpt['flops_per_token'] / 1e6:.1f} MFLOP "
        f"({fpt['formula']}; elementwise work not counted)",
        f"- roofline: {roof['tokens_per_s']:,.0f} tokens/s",
        "- npdistil: "
        + ", ".join(f"{shape} {100 * frac:.0f}% of it" for shape, frac in roof["fraction"].items())
        + "; PyTorch: "
        + ", ".join(
            f"{shape} {100 * frac:.0f}%" for shape, frac in roof["pytorch_fraction"].items()
        ),
        "- NumPy matmul at the model's shapes (best timing / best median, GFLOP/s): "
        + "; ".join(f"{k} {v['max']:.0f} / {v['median']:.0f}" for k, v in roof["matmul"].items()),
    ]
    if "corpus" in r:
        c, st = r["corpus"], r["corpus_stats"]
        proc = st["processed_tokens"]
        lines += [
            "",
            f"### Real corpus: pydoc_data.topics paragraphs ({st['texts']:,} texts)",
            "",
            f"Tokens per text (with [CLS]/[SEP], tokenizer below): median "
            f"{st['median_tokens']:.0f}, 95th percentile {st['p95_tokens']:.0f}, max "
            f"{st['max_tokens']}, {st['over_512']} over 512 (truncated). Real tokens: "
            f"{st['real_tokens']:,}. Tokenization and mean pooling are inside the timings.",
            "",
            "| system | batching | tokens processed / real | seconds | real tokens/s | "
            "npdistil/this |",
            "|---|---|---|---|---|---|",
        ]
        padded = {
            "npdistil": proc["sorted_by_tokens"],
            "pytorch_corpus_order": proc["corpus_order"],
            "pytorch_sorted": proc["sorted_by_characters"],
            "onnxruntime_sorted": proc["sorted_by_characters"],
        }
        for key in ("npdistil", "pytorch_corpus_order", "pytorch_sorted", "onnxruntime_sorted"):
            e = c[key]
            ratio = c["npdistil"]["tokens_per_s"] / e["tokens_per_s"]
            lines.append(
                f"| {LABEL[e['system']]} | {e['batching']} | "
                f"{padded[key] / st['real_tokens']:.2f} | {e['seconds']:.1f} | "
                f"{e['tokens_per_s']:,.0f} | {ratio:.2f}x |"
            )
        lines += [
            "",
            f"npdistil vs PyTorch sentence embeddings: max abs error "
            f"{c['npdistil_vs_pytorch_max_abs_error']:.1e}.",
        ]
    s, rss = r["startup"], r["peak_rss"]
    lines += [
        "",
        "### Start-up, memory, parity",
        "",
        "| | npdistil | PyTorch | ONNX Runtime | npdistil/PyTorch |",
        "|---|---|---|---|---|",
        "| `python -c` to first embedding (median) | "
        + " | ".join(f"{s[n]['median']:.2f} s" for n in SYSTEM_NAMES)
        + f" | {s['npdistil']['median'] / s['pytorch']['median']:.3f}x |",
        "| peak RSS, one 32x128 batch | "
        + " | ".join(f"{rss[n]['peak_rss_mb']:.0f} MB" for n in SYSTEM_NAMES)
        + f" | {rss['npdistil']['peak_rss_mb'] / rss['pytorch']['peak_rss_mb']:.2f}x |",
        f"| max abs error vs PyTorch, 8x128 | {r['parity']['npdistil_vs_pytorch']:.1e} | — | "
        f"{r['parity']['onnxruntime_vs_pytorch']:.1e} | |",
        "",
        "### Issue 3 targets",
        "",
        "| measure | target | measured | |",
        "|---|---|---|---|",
    ]
    for row in r["targets"]:
        status = "MET" if row["met"] else "NOT MET"
        lines.append(f"| {row['measure']} | {row['target']} | {row['shown']} | {status} |")
    tok = r["assets"]["checkpoint"]["tokenizer"]
    lines += [
        "",
        f"Weights: {r['assets']['checkpoint']['weights']} "
        f"({r['assets']['checkpoint']['n_params']:,} parameters, distilbert-base-cased's "
        f"shapes). Tokenizer: {tok['kind']}, {tok['vocab_size']:,} entries, trained on "
        f"{tok['trained_on']}.",
    ]
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--threads", type=int, default=2, help="threads for every system")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per shape (7; quick 2)")
    parser.add_argument(
        "--corpus-step", type=int, help="embed every k-th paragraph only (quick: 8)"
    )
    parser.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE if set (default: unset for the run)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="don't wait for other processes to leave the CPU idle before timed runs",
    )
    parser.add_argument("--skip-corpus", action="store_true", help="leave out the corpus")
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "cache")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "results.json")
    args = parser.parse_args(argv)

    before = set_environment(args.threads, args.keep_openblas_env)
    sys.path.insert(0, str(HERE))
    import assets as assets_module

    started = time.perf_counter()
    rounds = args.rounds or (2 if args.quick else 7)
    # After a call, OpenBLAS keeps a thread spinning ~0.1 s and ONNX Runtime ~0.05 s
    # (measured): pause before the next system's turn so that it gets the cores alone.
    quiet = Quiet(0 if args.no_wait else 600, settle=0.25)
    r: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine(before, args.threads),
        "load_average": {"start": load_average()},
    }
    log(
        f"machine: {r['machine']['cpu']}, {r['machine']['cpu_count']} cores, "
        f"load average {r['load_average']['start']}"
    )
    assets = assets_module.prepare(args.cache, run_in_child, log)
    r["assets"] = {k: v for k, v in assets.items() if k != "fingerprint"}

    log("starting the three systems, each in its own process ...")
    workers: dict[str, Worker] = {}
    try:
        for name in SYSTEM_NAMES:
            workers[name] = Worker(name, assets)
        r["load_seconds_in_worker"] = {n: w.load_seconds for n, w in workers.items()}
        r["systems"] = {n: w.call("describe") for n, w in workers.items()}
        assets["npdistil_file"] = r["systems"]["npdistil"]["converted_file"]
        log("parity ...")
        r["parity"] = measure_parity(workers)
        log("matmul peak ...")
        peak_runs = 5 if args.quick else 10
        # Timed at the start, after each shape and at the end: the best is the machine's.
        peaks = [measure_peak(workers["npdistil"], peak_runs, quiet)]
        log("throughput and latency, systems interleaved ...")
        r["throughput"] = measure_shapes(
            workers,
            rounds,
            0.3 if args.quick else 0.5,
            quiet,
            lambda: peaks.append(measure_peak(workers["npdistil"], peak_runs, quiet)),
        )
        if not args.skip_corpus:
            texts = assets_module.corpus()
            step = args.corpus_step or (8 if args.quick else 1)
            texts = texts[::step]
            r["corpus_stats"] = token_stats(texts, assets["folder"])
            r["corpus_stats"]["every_kth_paragraph"] = step
            log(f"corpus: {len(texts)} paragraphs, {r['corpus_stats']['real_tokens']:,} tokens")
            r["corpus"] = measure_corpus(workers, texts, r["corpus_stats"], quiet)
        log("matmul peak again ...")
        peaks.append(measure_peak(workers["npdistil"], peak_runs, quiet))
    finally:
        for w in workers.values():
            w.close()

    peak_key = next(iter(peaks[0]))
    peak = max(p[peak_key]["max"] for p in peaks) * 1e9
    best_at_shapes = {
        k: {"max": max(p[k]["max"] for p in peaks), "median": max(p[k]["median"] for p in peaks)}
        for k in peaks[0]
        if k != peak_key
    }
    flops = flops_per_token(T_ROOF)
    roof_tps = peak / flops["flops_per_token"]
    r["roofline"] = {
        "peak_gflops": peak / 1e9,
        "peak_runs": peaks,
        "matmul": best_at_shapes,
        "flops": flops,
        "tokens_per_s": roof_tps,
        "fraction": {
            s: r["throughput"][s]["npdistil"]["tokens_per_s"] / roof_tps
            for s in ("8x128", "32x128")
        },
        "pytorch_fraction": {
            s: r["throughput"][s]["pytorch"]["tokens_per_s"] / roof_tps for s in ("8x128", "32x128")
        },
    }

    fields = {
        "npdistil_file": assets["npdistil_file"],
        "folder": assets["folder"],
        "onnx": assets["onnx"],
        "threads": args.threads,
    }
    log("start-up, fresh processes ...")
    r["startup"] = measure_startup(fields, 1 if args.quick else 3, quiet)
    log("peak RSS, fresh processes ...")
    r["peak_rss"] = measure_rss(fields, quiet)

    r["load_average"]["end"] = load_average()
    r["other_processes"] = {
        "core_seconds_during_timed_calls": Worker.others,
        "share_during_timed_calls": Worker.others / max(Worker.wall * (os.cpu_count() or 1), 1e-9),
        "seconds_waited_for_quiet": quiet.waited,
    }
    if r["other_processes"]["share_during_timed_calls"] > 0.05:
        share = r["other_processes"]["share_during_timed_calls"]
        log(
            f"WARNING: other processes used {100 * share:.0f}% of the CPU "
            "during the timed calls: the timings are not trustworthy, run again on a quiet machine"
        )
    r["seconds"] = time.perf_counter() - started
    r["targets"] = targets(r)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=2, default=str) + "\n")
    print(markdown(r))
    log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""npdistil against PyTorch and ONNX Runtime on the CPU, side by side, in one run (issue 12).

    pip install -e ".[bench]"
    python benchmarks/run.py    # about 15 min on an idle 2-core machine; --quick: smoke run

Same machine, same thread count (2 by default), same full-size distilbert-base-cased-shaped
weights for every system. Each system runs in its own process. Timings are paired: in every
round each system is timed back to back (the order rotates between rounds), the ratio of two
systems is taken within the round, and the figure reported is the median of those per-round
ratios, with their min and max (the machines here are shared and drift 2x within minutes).

Peers: PyTorch (eager) and ONNX Runtime on three fp32 graphs of the same model (the TorchScript
export, as Optimum makes it; that export after ORT's transformer optimizer; an eager-attention
export after the optimizer); npdistil is held to the strongest of the three at each shape.
ORT's dynamic int8 quantisation is a reference row (another accuracy class: its distance from
fp32 is printed). npdistil's int8 and float16 files are measured against its float32 file when
the installed npdistil makes them (``convert_folder(..., dtype=...)``).

Also measured: one- and two-thread sgemm peaks of NumPy/OpenBLAS and ORT's MLAS at the model's
shapes (the roofline uses the best); the paragraphs of ``pydoc_data.topics`` as users run each
system; start-up of a new process to its first embedding; peak RSS of fresh processes; parity
against PyTorch. Prints markdown with every target of issue 12 (MET / NOT MET) and writes
everything to benchmarks/out/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The systems timed against each other, and the fp32 ONNX graphs npdistil is held to.
PEERS = (
    "npdistil",
    "npdistil_products",
    "pytorch",
    "onnxruntime",
    "onnxruntime_optimized",
    "onnxruntime_eager_optimized",
    "onnxruntime_int8",
)
ORT_FP32 = ("onnxruntime", "onnxruntime_optimized", "onnxruntime_eager_optimized")
SMALL = ("npdistil", "npdistil_int8", "npdistil_float16")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# Set on some machines here to work around old OpenBLAS bugs; they halve a current NumPy's
# matmul on an AVX-512 CPU (they pin OpenBLAS to its AVX2 "Haswell" kernel).
OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SHAPES = ((1, 16), (1, 128), (8, 128), (32, 128))
# The model: distilbert-base-cased.
D, F, N_LAYERS, T_ROOF = 768, 3072, 6, 128
# Matrix products as the model makes them, [m, k] @ [k, n]: the FFN at 32x128 and 8x128
# tokens, the attention linears at 8x128, and the small products of one sequence.
CEILING_SHAPES = (
    (4096, 768, 3072),
    (1024, 768, 3072),
    (1024, 3072, 768),
    (1024, 768, 768),
    (128, 768, 3072),
    (16, 768, 3072),
)


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


def openblas_message(before: dict[str, Any], keep: bool) -> str:
    """What the run did with the OpenBLAS tuning variables, in one sentence."""
    found = {k: before.get(k) for k in OPENBLAS_TUNING if before.get(k) is not None}
    if not found:
        return "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE were not set"
    listed = ", ".join(f"{k}={v}" for k, v in found.items())
    if keep:
        return f"{listed} set in the environment and KEPT (--keep-openblas-env)"
    return (
        f"{listed} set in the environment: UNSET for this run and its children "
        "(they halve NumPy's matmul on AVX-512 CPUs; a user's machine would not have them)"
    )


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
        # A process that already died: its error is what gets reported, not this one.
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def start_workers(names: tuple[str, ...], assets: dict[str, Any]) -> dict[str, Worker]:
    workers: dict[str, Worker] = {}
    try:
        for name in names:
            log(f"  starting {name} ...")
            workers[name] = Worker(name, assets)
    except BaseException:
        close_workers(workers)
        raise
    return workers


def close_workers(workers: dict[str, Worker]) -> None:
    for w in workers.values():
        w.close()


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
    names: tuple[str, ...],
    shapes: tuple[tuple[int, int], ...],
    rounds: int,
    round_seconds: float,
    quiet: Quiet,
    after_each: Any = None,
) -> dict[str, Any]:
    """Per shape: a warm-up, then ``rounds`` rounds in which every system, in an order that
    rotates by one each round, makes enough back-to-back calls to fill about
    ``round_seconds`` (at least one). A system's time in a round is the median of its calls
    there; ``paired`` compares two systems round by round."""
    results: dict[str, Any] = {}
    for b, t in shapes:
        ids, mask = random_batch(b, t)
        calls = {}
        for name in names:
            warm = workers[name].call("time_forward", ids, mask, 1)
            if warm[0] < 1.0:  # big shapes are warm after one call; small ones get three
                warm += workers[name].call("time_forward", ids, mask, 2)
            calls[name] = max(1, min(40, round(round_seconds / min(warm))))
        per_round: dict[str, list[float]] = {name: [] for name in names}
        orders = []
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            orders.append(order)
            for name in order:
                quiet.wait()
                times = workers[name].call("time_forward", ids, mask, calls[name])
                per_round[name].append(statistics.median(times))
        systems = {}
        for name in names:
            s: dict[str, Any] = summary(per_round[name])
            s["tokens_per_s"] = b * t / s["median"]
            s["ms"] = 1000 * s["median"]
            s["per_round_seconds"] = per_round[name]
            systems[name] = s
        results[f"{b}x{t}"] = {
            "batch": b,
            "tokens": t,
            "calls_per_turn": calls,
            "orders": orders,
            "systems": systems,
        }
        log(
            f"  {b}x{t}: "
            + ", ".join(f"{n} {systems[n]['tokens_per_s']:,.0f} tok/s" for n in names)
        )
        if after_each is not None:
            after_each()
    return results


def paired(shape: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """How many times faster ``a`` ran than ``b``, round by round (b's seconds over a's in the
    same round): the median of the per-round ratios, their min and max."""
    ta = shape["systems"][a]["per_round_seconds"]
    tb = shape["systems"][b]["per_round_seconds"]
    ratios = [y / x for x, y in zip(ta, tb, strict=True)]
    return {**summary(ratios), "per_round": ratios}


def strongest(shape: dict[str, Any], candidates: tuple[str, ...]) -> str:
    """The candidate with the most tokens/s (median over rounds) at this shape."""
    present = [c for c in candidates if c in shape["systems"]]
    return max(present, key=lambda c: shape["systems"][c]["tokens_per_s"])


def ratios(throughput: dict[str, Any], base: str, peers: tuple[str, ...]) -> dict[str, Any]:
    """Per shape: ``base`` against each peer, paired, and against the strongest fp32 ORT graph
    (when the peers include ORT graphs)."""
    out: dict[str, Any] = {}
    for key, shape in throughput.items():
        entry = {p: paired(shape, base, p) for p in peers if p != base}
        if any(p in ORT_FP32 for p in peers):
            best = strongest(shape, ORT_FP32)
            entry["strongest_ort_fp32"] = {"graph": best, **paired(shape, base, best)}
        out[key] = entry
    return out


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


def measure_ceiling(ceiling: Worker, n: int, quiet: Quiet) -> dict[str, Any]:
    quiet.wait()
    return ceiling.call("peaks", list(CEILING_SHAPES), n)


def combine_ceiling(runs: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The best of every timing over the runs (taken at the start, after each shape and at the
    end: the machine's speed drifts), per library, thread count and shape; the roofline uses
    the best rate at the run's thread count, whichever library and shape gave it."""
    table: dict[str, Any] = {}
    best = (0.0, "", "")
    for lib in ("numpy", "mlas"):
        for t in runs[0][lib]:
            for i, (m, k, c) in enumerate(CEILING_SHAPES):
                rates = [rate for run in runs for rate in run[lib][t][i]]
                medians = [statistics.median(run[lib][t][i]) for run in runs]
                key = f"{m}x{k}@{k}x{c}"
                table.setdefault(key, {})[f"{lib}_{t}t"] = {
                    "best": max(rates),
                    "best_median": max(medians),
                }
                if t == threads and max(rates) > best[0]:
                    best = (max(rates), lib, key)
    flops = flops_per_token(T_ROOF)
    peak = best[0] * 1e9
    return {
        "gflops": table,
        "peak_gflops": best[0],
        "peak_from": {"library": best[1], "shape": best[2], "threads": threads},
        "flops": flops,
        "tokens_per_s": peak / flops["flops_per_token"],
        "runs": len(runs),
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
    workers: dict[str, Worker], ort: str, texts: list[str], stats: dict[str, Any], quiet: Quiet
) -> dict[str, Any]:
    """Each way of running the corpus once (after a small warm-up), embeddings kept for a
    parity check. ``ort``: the fp32 ONNX graph that runs it."""
    runs = (
        (
            "npdistil",
            "npdistil",
            True,
            "model.encode(texts, batch_size=32): sorted by tokens, packed unpadded",
        ),
        ("pytorch_corpus_order", "pytorch", False, "batches of 32 in corpus order, padded"),
        ("pytorch_sorted", "pytorch", True, "batches of 32 sorted by length (as ST)"),
        ("onnxruntime_sorted", ort, True, "batches of 32 sorted by length"),
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
STARTUP_SYSTEMS = tuple(STARTUP_CODE)

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
# Peak RSS is read from /proc/self/status (VmHWM: this process image's high-water mark), not
# from getrusage: Linux carries ru_maxrss across fork + exec, so a child of this big harness
# process would report at least the harness's own RSS.
PEAK_RSS = (
    "def peak_rss_kb():\n"
    "    try:\n"
    "        for line in open('/proc/self/status'):\n"
    "            if line.startswith('VmHWM:'):\n"
    "                return int(line.split()[1])\n"
    "    except OSError:\n"
    "        pass\n"
    "    import resource\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
)
RSS_PRELUDE = (
    PEAK_RSS + "import resource\n"
    "import numpy as np\n"
    "ids = np.random.default_rng(0).integers(106, 28996, size=(32, 128), dtype=np.int64)\n"
    "mask = np.ones_like(ids)\n"
)
RSS_EPILOGUE = "assert h.shape == (32, 128, 768)\nprint('MAXRSS_KB', peak_rss_kb())\n"
# A fresh process embedding one sentence with an npdistil file (the small-machine case).
ONE_SENTENCE_CODE = (
    PEAK_RSS + "import npdistil\n"
    "v = npdistil.load({path!r}).encode(['Hello world!'])\n"
    "assert v.shape[0] == 1\n"
    "print('MAXRSS_KB', peak_rss_kb())\n"
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
    codes = {name: STARTUP_CODE[name].format(**fields) for name in STARTUP_SYSTEMS}
    for code in codes.values():
        time_startup(code)
    times: dict[str, list[float]] = {name: [] for name in STARTUP_SYSTEMS}
    for _ in range(runs):
        for name, code in codes.items():
            quiet.wait()
            times[name].append(time_startup(code))
    out = {name: summary(t) for name, t in times.items()}
    log("  start-up: " + ", ".join(f"{n} {out[n]['median']:.2f} s" for n in STARTUP_SYSTEMS))
    return out


def max_rss_mb(code: str, what: str) -> float:
    """Peak RSS (VmHWM) of a fresh ``python -c code`` that prints it."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    line = [x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"RSS run of {what} failed:\n{done.stderr}")
    return int(line[0].split()[1]) / 1024


def measure_rss(fields: dict[str, Any], quiet: Quiet) -> dict[str, Any]:
    out = {}
    for name in STARTUP_SYSTEMS:
        quiet.wait()
        code = RSS_PRELUDE + RSS_CODE[name].format(**fields) + RSS_EPILOGUE
        out[name] = {"peak_rss_mb": max_rss_mb(code, name)}
    log("  peak RSS: " + ", ".join(f"{n} {out[n]['peak_rss_mb']:.0f} MB" for n in out))
    return out


def measure_parity(workers: dict[str, Worker]) -> dict[str, Any]:
    """Max abs errors of the last hidden state on one 8x128 batch of random ids: npdistil
    and every fp32 ORT graph against PyTorch; ORT int8 against the fp32 export (with the
    cosine of the mean-pooled rows); npdistil on a padded batch (real tokens only)."""
    import numpy as np
    import systems

    ids, mask = random_batch(8, 128, seed=1)
    ref = workers["pytorch"].call("forward", ids, mask)
    out: dict[str, Any] = {"input": "8x128 random ids, full mask"}
    for name in ("npdistil", *ORT_FP32):
        out[f"{name}_vs_pytorch"] = float(
            np.abs(workers[name].call("forward", ids, mask) - ref).max()
        )
    fp32 = workers["onnxruntime"].call("forward", ids, mask)
    int8 = workers["onnxruntime_int8"].call("forward", ids, mask)
    out["onnxruntime_int8_vs_fp32"] = {
        "max_abs_error": float(np.abs(int8 - fp32).max()),
        "max_abs_fp32": float(np.abs(fp32).max()),
        "mean_pooled_cosine": systems.cosine_summary(int8.mean(1), fp32.mean(1)),
    }
    # and a padded batch: rows of 128, 97, 40 and 5 tokens
    lengths = (128, 97, 40, 5)
    pids, _ = random_batch(len(lengths), 128, seed=2)
    pmask = (np.arange(128)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    pids = pids * pmask
    pref = workers["pytorch"].call("forward", pids, pmask)
    pmine = workers["npdistil"].call("forward", pids, pmask)
    keep = pmask.astype(bool)
    out["padded_4x128_npdistil_vs_pytorch_real_tokens"] = float(
        np.abs(pmine[keep] - pref[keep]).max()
    )
    return out


def measure_agreement(
    workers: dict[str, Worker], pairs: tuple[tuple[str, str], ...], texts: list[str]
) -> dict[str, Any]:
    """For each (system, reference): cosine of their mean-pooled sentence embeddings of
    ``texts`` (tokenization as each runs it), and the max abs error of their last hidden
    states on one 8x128 batch of random ids."""
    import numpy as np
    import systems

    ids, mask = random_batch(8, 128, seed=1)
    embedded = {}
    hidden = {}
    for name in {n for pair in pairs for n in pair}:
        embedded[name] = workers[name].call("embed_corpus", texts, 32, True)[0]
        hidden[name] = workers[name].call("forward", ids, mask)
    return {
        f"{a}_vs_{b}": {
            "sentence_cosine": systems.cosine_summary(embedded[a], embedded[b]),
            "hidden_max_abs_error_8x128": float(np.abs(hidden[a] - hidden[b]).max()),
        }
        for a, b in pairs
    }


# ---- the machine ------------------------------------------------------------------------------


def microarchitecture(vendor: str, family: int | None, flags: set[str]) -> str | None:
    """AMD's core generation from the CPU family (Zen 4 and Zen 3 share family 25; only Zen 4
    has AVX-512). None when unknown."""
    if vendor != "AuthenticAMD" or family is None:
        return None
    if family == 26:
        return "Zen 5"
    if family == 25:
        return "Zen 4" if "avx512f" in flags else "Zen 3"
    if family == 23:
        return "Zen / Zen 2"
    return None


def machine(before: dict[str, Any], threads: int, keep_openblas: bool) -> dict[str, Any]:
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
    flags = set(info.get("flags", "").split())
    simd = [
        f
        for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
        if f in flags
    ]
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    return {
        "cpu": info.get("model name", platform.processor() or "unknown"),
        "vendor": info.get("vendor_id"),
        "cpu_family": family,
        "cpu_model": info.get("model"),
        "microarchitecture": microarchitecture(info.get("vendor_id", ""), family, flags),
        "cpu_mhz": info.get("cpu MHz"),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "simd": simd,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
        "environment_before": before,
        "openblas_tuning_in_effect": {k: os.environ.get(k) for k in OPENBLAS_TUNING},
        "openblas_tuning": openblas_message(before, keep_openblas),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---- main -------------------------------------------------------------------------------------


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x16,8x128"`` -> ((1, 16), (8, 128))."""
    try:
        shapes = tuple(
            (int(b), int(t)) for b, t in (part.strip().split("x") for part in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"not BxT[,BxT...]: {text!r}") from None
    if not shapes or any(not (b > 0 and 0 < t <= 512) for b, t in shapes):
        raise argparse.ArgumentTypeError(f"batch >= 1 and 1 <= tokens <= 512: {text!r}")
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--threads", type=int, default=2, help="threads for every system")
    parser.add_argument("--rounds", type=int, help="paired rounds per shape (7; quick 2)")
    parser.add_argument(
        "--corpus-step", type=int, help="embed every k-th corpus paragraph only (2; quick 32)"
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
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=SHAPES,
        help="batch x tokens to time, e.g. 1x16,8x128 (default: all four of the targets)",
    )
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "cache")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "results.json")
    args = parser.parse_args(argv)

    before = set_environment(args.threads, args.keep_openblas_env)
    sys.path.insert(0, str(HERE))
    import assets as assets_module
    import report
    import systems

    started = time.perf_counter()
    rounds = args.rounds or (2 if args.quick else 7)
    round_seconds = 0.2 if args.quick else 0.5
    ceiling_runs = 3 if args.quick else 5
    # After a call, OpenBLAS keeps a thread spinning ~0.1 s and ONNX Runtime ~0.05 s
    # (measured): pause before the next system's turn so that it gets the cores alone.
    quiet = Quiet(0 if args.no_wait else (120 if args.quick else 600), settle=0.25)
    r: dict[str, Any] = {
        "quick": args.quick,
        "rounds": rounds,
        "machine": machine(before, args.threads, args.keep_openblas_env),
        "load_average": {"start": load_average()},
    }
    m = r["machine"]
    log(
        f"machine: {m['cpu']} (family {m['cpu_family']} model {m['cpu_model']}"
        f"{', ' + m['microarchitecture'] if m['microarchitecture'] else ''}), "
        f"{m['cpu_count']} cores, load average {r['load_average']['start']}"
    )
    log(m["openblas_tuning"])
    assets = assets_module.prepare(args.cache, run_in_child, log)
    r["assets"] = {k: v for k, v in assets.items() if k != "fingerprint"}
    log("npdistil's small weights: converting ...")
    assets["small"] = run_in_child(
        assets_module.convert_small, assets["folder"], assets["small_dir"]
    )
    r["small_weights"] = {"conversion": assets["small"]}
    if not assets["small"]["available"]:
        log(f"  not measured: {assets['small']['reason']}")
    all_texts = assets_module.corpus()
    # Real text for the agreement of int8 / float16 with float32 (each system's tokenizer).
    sample = all_texts[:: 160 if args.quick else 40]

    log("starting the systems, each in its own process ...")
    workers = start_workers(("ceiling", *PEERS), assets)
    try:
        r["load_seconds_in_worker"] = {n: w.load_seconds for n, w in workers.items()}
        r["systems"] = {n: w.call("describe") for n, w in workers.items()}
        assets["npdistil_file"] = r["systems"]["npdistil"]["converted_file"]
        log("parity and the int8 reference's distance from fp32 ...")
        r["parity"] = measure_parity(workers)
        r["onnxruntime_int8_agreement"] = measure_agreement(
            workers, (("onnxruntime_int8", "onnxruntime"),), sample
        )
        r["agreement_texts"] = len(sample)
        log("matmul peaks (NumPy, MLAS; 1 and 2 threads) ...")
        ceilings = [measure_ceiling(workers["ceiling"], ceiling_runs, quiet)]

        def ceiling_again() -> None:
            ceilings.append(measure_ceiling(workers["ceiling"], ceiling_runs, quiet))

        log(f"throughput, {len(PEERS)} systems paired per round, {rounds} rounds ...")
        r["throughput"] = measure_shapes(
            workers, PEERS, args.shapes, rounds, round_seconds, quiet, ceiling_again
        )
        r["ratios"] = ratios(r["throughput"], "npdistil", PEERS)
        # The floor: npdistil's matrix products alone against the same ORT graphs.
        r["floor_ratios"] = ratios(r["throughput"], "npdistil_products", ORT_FP32)
        # One fp32 graph runs the corpus, start-up and memory: the fastest over all shapes.
        best_graph = max(
            ORT_FP32,
            key=lambda g: sum(
                math.log(s["systems"][g]["tokens_per_s"]) for s in r["throughput"].values()
            ),
        )
        r["best_ort_fp32"] = best_graph
        assets["onnx_best"] = assets[systems.ORT_SYSTEMS[best_graph].graph]
        if not args.skip_corpus:
            step = args.corpus_step or (32 if args.quick else 2)
            texts = all_texts[::step]
            r["corpus_stats"] = token_stats(texts, assets["folder"])
            r["corpus_stats"]["every_kth_paragraph"] = step
            log(f"corpus: {len(texts)} paragraphs, {r['corpus_stats']['real_tokens']:,} tokens")
            r["corpus"] = measure_corpus(workers, best_graph, texts, r["corpus_stats"], quiet)
        close_workers({n: w for n, w in workers.items() if n not in ("npdistil", "ceiling")})
        workers = {n: workers[n] for n in ("npdistil", "ceiling")}

        if assets["small"]["available"]:
            log("npdistil's int8 and float16 files against its float32 ...")
            workers.update(start_workers(SMALL[1:], assets))
            small = r["small_weights"]
            small["agreement"] = measure_agreement(
                workers, tuple((name, "npdistil") for name in SMALL[1:]), sample
            )
            small["throughput"] = measure_shapes(
                workers, SMALL, args.shapes, rounds, round_seconds, quiet
            )
            small["ratios"] = ratios(small["throughput"], "npdistil", SMALL)
            # and the other way round: each small file's speed over float32's
            for key, shape in small["throughput"].items():
                for name in SMALL[1:]:
                    small["ratios"][key][f"{name}_over_float32"] = paired(shape, name, "npdistil")
        log("matmul peaks again ...")
        ceiling_again()
    finally:
        close_workers(workers)
    r["roofline"] = combine_ceiling(ceilings, args.threads)
    roof = r["roofline"]["tokens_per_s"]
    r["roofline"]["fraction"] = {
        name: {
            s: r["throughput"][s]["systems"][name]["tokens_per_s"] / roof
            for s in ("8x128", "32x128")
            if s in r["throughput"]
        }
        for name in ("npdistil", "pytorch", best_graph)
    }

    log("all-MiniLM-L6-v2 (real weights): int8 against float32 ...")
    r["minilm"] = run_in_child(systems.minilm_agreement, assets["small_dir"], sample)
    if "skipped" in r["minilm"]:
        log(f"  skipped: {r['minilm']['skipped']}")
    log("all-MiniLM-L6-v2 (real weights): parity with transformers and sentence-transformers ...")
    r["minilm_parity"] = run_in_child(systems.minilm_parity, sample)

    fields = {
        "npdistil_file": assets["npdistil_file"],
        "folder": assets["folder"],
        "onnx": assets["onnx_best"],
        "threads": args.threads,
    }
    log("start-up, fresh processes ...")
    r["startup"] = measure_startup(fields, 1 if args.quick else 3, quiet)
    log("peak RSS, fresh processes ...")
    r["peak_rss"] = measure_rss(fields, quiet)
    # npdistil embedding one sentence: the float32 file users get from load(), and the small
    # files when there are any.
    files = {"float32": assets["npdistil_file"]}
    if assets["small"]["available"]:
        files = assets["small"]["files"]
    one = r["small_weights"]["one_sentence_rss_mb"] = {}
    for dtype, path in files.items():
        quiet.wait()
        one[dtype] = max_rss_mb(ONE_SENTENCE_CODE.format(path=path), f"one sentence, {dtype}")
    log(
        "  npdistil embedding one sentence: " + ", ".join(f"{d} {v:.0f} MB" for d, v in one.items())
    )

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
    r["targets"] = report.targets(r)
    r["watched"] = report.watched(r)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=2, default=str) + "\n")
    print(report.markdown(r))
    log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

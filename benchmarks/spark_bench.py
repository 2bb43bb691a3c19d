"""npdistil on Spark (local[2], or a standalone cluster of two 1-core workers) against
model.encode in one process, on a real corpus (issues 10 and 21).

    pip install -e ".[spark]"
    python benchmarks/spark_bench.py                   # local[2]; ~10 min on an idle 2-core box
    python benchmarks/spark_bench.py --master cluster  # a standalone master and two workers

The corpus is the paragraphs of CPython's ``pydoc_data.topics``; the model the full-size
``distilbert-base-cased`` architecture with the seeded weights of ``tests/synthetic.py`` and a
cased WordPiece vocabulary learned from the standard library's docstrings (benchmarks/assets.py:
speed per token does not depend on the values). Each round embeds the whole corpus twice, in
rotating order:

- **Spark**: ``DistilBertEmbeddings`` on a ``local[2]`` session (two Python workers, one BLAS
  thread each, as Spark sets them), or with ``--master cluster`` on a standalone cluster started
  here on 127.0.0.1 (a master and two workers of one core each, spark-class ...Master/Worker;
  one executor per worker, each in its own JVM with its own Python worker, the model shipped to
  them), the DataFrame written to Spark's ``noop`` sink so every row is computed and nothing is
  collected;
- **one process**: a fresh Python process running ``model.encode`` on the same texts with both
  cores (npdistil splits each batch between two threads).

Both embed with the same options (mean pooling, ``longText="truncate"`` as benchmarks/run.py, so
both do the same work on the dozen texts over 512 tokens). Rows/s per system per round, the
median of the per-round ratios, and peak RSS: of each Python worker (VmHWM from /proc, which
counts the shared, memory-mapped weights in every process that touches them) and of the one
process. With ``--output-value word_embeddings`` or ``token_embeddings`` it measures the
annotation outputs instead. ``--memory-check`` also runs a session per
``spark.executor.pyspark.memory`` limit (512m, 1g, 1280m) and reports whether its workers can
embed the corpus within it.

Prints markdown; writes everything to benchmarks/out/spark.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import assets  # noqa: E402
from run import Quiet  # noqa: E402

OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def checkpoint(cache: Path) -> Path:
    """The full-size synthetic checkpoint folder of benchmarks/run.py (built once, shared)."""
    cache.mkdir(parents=True, exist_ok=True)
    stamp, folder = cache / "assets.json", cache / "checkpoint"
    info = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if info.get("fingerprint") != assets._fingerprint() or not (folder / "config.json").is_file():
        log("writing the full-size synthetic checkpoint and learning a tokenizer (once) ...")
        info = {"fingerprint": assets._fingerprint(), "checkpoint": assets.write_checkpoint(folder)}
        stamp.write_text(json.dumps(info, indent=2))
    return folder


# ---- one process ---------------------------------------------------------------------------------

_ONE_PROCESS = """
import json, resource, sys, time
import npdistil
from assets import corpus
model = npdistil.load(sys.argv[1])
texts = corpus()[:: int(sys.argv[2])]
options = json.loads(sys.argv[3])
model.encode(texts[:64], **options)  # warm-up, as the Spark workers are warm
start = time.perf_counter()
out = model.encode(texts, **options)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec from the parent.
peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) * 1024
print(json.dumps({"seconds": seconds, "rows": len(out), "peak_rss": peak}))
"""


def one_process(path: str, step: int, options: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-c", _ONE_PROCESS, path, str(step), json.dumps(options)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"model.encode in one process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- Spark ---------------------------------------------------------------------------------------


class StandaloneCluster:
    """A standalone master and two 1-core workers on 127.0.0.1, started here and stopped by
    their pids (each with its process group: executors and Python workers too)."""

    def __init__(self, root: Path) -> None:
        import pyspark

        self.root, self.home = root, Path(pyspark.__file__).parent
        shutil.rmtree(root, ignore_errors=True)  # an earlier run's work dirs: shipped copies
        root.mkdir(parents=True)
        (root / "daemon.conf").write_text("spark.master.rest.enabled false\n")
        self.env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(self.home)}
        self.processes: list[subprocess.Popen] = []
        self.url = ""

    def _start(self, name: str, args: list[str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            command = [str(self.home / "bin" / "spark-class"), *args]
            command += ["--properties-file", str(self.root / "daemon.conf")]
            self.processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
            )

    def _wait(self, name: str, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = re.search(pattern, (self.root / f"{name}.log").read_text(errors="replace"))
            if found:
                return found
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not start: see {self.root / (name + '.log')}")

    def __enter__(self) -> StandaloneCluster:
        master = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0"]
        self._start("master", [*master, "--webui-port", "0"])
        self.url = self._wait("master", r"Starting Spark master at (spark://[\d.]+:\d+)").group(1)
        for name in ("worker-a", "worker-b"):
            work = self.root / name
            work.mkdir(exist_ok=True)
            worker = ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", "0"]
            worker += ["--webui-port", "0", "--cores", "1", "--memory", "3g"]
            self._start(name, [*worker, "--work-dir", str(work), self.url])
            self._wait(name, "Successfully registered with master")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def start_spark(extra: dict[str, str] | None = None, master: str = "local[2]") -> Any:
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName("npdistil-spark-bench")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
    )
    if not master.startswith("local"):  # one 1-core executor per worker
        builder = builder.config("spark.executor.cores", "1").config("spark.cores.max", "2")
        builder = builder.config("spark.executor.memory", "1g")
    for k, v in (extra or {}).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def python_workers(spark: Any) -> dict[int, dict[str, int]]:
    """The session's PySpark worker processes (forked from the daemon, whose parent is the
    session's JVM in local mode, an executor of the application on a cluster) and their memory
    from /proc: peak RSS (VmHWM), and now the anonymous and file-backed parts (RssAnon,
    RssFile), in bytes."""
    jvms = {spark.sparkContext._gateway.proc.pid}
    app = spark.sparkContext.applicationId.encode()
    for entry in Path("/proc").iterdir():  # the application's executors
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"CoarseGrainedExecutorBackend" in cmdline and app in cmdline:
            jvms.add(int(entry.name))
    found: dict[int, dict[str, int]] = {}
    daemons = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if b"pyspark.daemon" not in cmdline:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields["PPid"])
        memory = {
            k: int(fields[k].split()[0]) * 1024
            for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")
            if k in fields
        }
        found[int(entry.name)] = {"ppid": ppid, **memory}
        if ppid in jvms:
            daemons.add(int(entry.name))
    return {pid: m for pid, m in found.items() if m["ppid"] in daemons}  # workers only


def spark_round(spark: Any, embed: Any, df: Any) -> float:
    start = time.perf_counter()
    embed.transform(df).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def memory_check(path: str, limit: str, step: int) -> dict[str, Any]:
    """A fresh session whose Python workers may use ``limit`` of memory: can they embed?"""
    code = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import spark_bench
from npdistil.spark import DistilBertEmbeddings
spark = spark_bench.start_spark({{"spark.executor.pyspark.memory": {limit!r}}})
texts = spark_bench.assets.corpus()[:: {step}]
df = spark.createDataFrame([(t,) for t in texts], "text string")
embed = DistilBertEmbeddings(model={path!r}, longText="truncate")
embed.transform(df).write.format("noop").mode("overwrite").save()
workers = spark_bench.python_workers(spark)
print("OK", max(w["VmHWM"] for w in workers.values()))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=600
    )
    last = done.stdout.strip().splitlines()[-1:] or [""]
    if done.returncode == 0 and last[0].startswith("OK"):
        return {"limit": limit, "ok": True, "peak_rss": int(last[0].split()[1])}
    errors = [ln for ln in done.stderr.splitlines() if re.match(r"\w[\w.]*(Error|Exception): ", ln)]
    return {"limit": limit, "ok": False, "error": (errors[-1] if errors else done.stderr[-500:])}


# ---- the run -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import numpy as np
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import pyspark

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ],
        "pyspark": pyspark.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--corpus-step", type=int, default=1, help="every K-th paragraph")
    p.add_argument(
        "--output-value",
        default="sentence_embedding",
        choices=("sentence_embedding", "word_embeddings", "token_embeddings"),
    )
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument(
        "--master",
        default="local",
        choices=("local", "cluster"),
        help="local[2], or a standalone cluster of two 1-core workers started on 127.0.0.1",
    )
    p.add_argument("--memory-check", action="store_true")
    p.add_argument("--keep-openblas-env", action="store_true")
    p.add_argument("--no-wait", action="store_true", help="don't wait for an idle CPU")
    p.add_argument("--cache", type=Path, default=HERE / "out" / "cache")
    p.add_argument("--json", type=Path, default=HERE / "out" / "spark.json")
    args = p.parse_args(argv)

    # Before NumPy or the JVM start: what a user's machine has (see benchmarks/README.md).
    before = {k: os.environ.get(k) for k in (*OPENBLAS_TUNING, *THREAD_VARIABLES)}
    if not args.keep_openblas_env:
        for k in OPENBLAS_TUNING:
            os.environ.pop(k, None)
    for k in THREAD_VARIABLES:
        os.environ.pop(k, None)  # Spark sets OMP_NUM_THREADS in its workers itself
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver's JVM listens on loopback only

    import npdistil

    folder = checkpoint(args.cache)
    model = npdistil.load(folder, cache_dir=args.cache / "npdistil")
    path = str(model.path)
    texts = assets.corpus()[:: args.corpus_step]
    tokens = sum(min(len(t.ids), 510) + 2 for t in model.tokenizer.tokenize(texts, limit=510))
    del model
    log(f"{len(texts)} texts, {tokens} tokens (truncated to 512); model {path}")

    with contextlib.ExitStack() as stack:
        master = "local[2]"
        if args.master == "cluster":
            log("starting a standalone master and two 1-core workers on 127.0.0.1 ...")
            master = stack.enter_context(StandaloneCluster(args.cache.parent / "cluster")).url
        spark = start_spark(master=master)
        stack.callback(spark.stop)
        report = run(args, spark, path, texts, tokens, before)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def run(
    args: argparse.Namespace,
    spark: Any,
    path: str,
    texts: list[str],
    tokens: int,
    before: dict[str, str | None],
) -> dict[str, Any]:
    from npdistil.spark import DistilBertEmbeddings

    output_value = {"token_embeddings": "tokens"}.get(args.output_value, args.output_value)
    options = {"long_text": "truncate", "output_value": output_value}
    rows = spark.sparkContext.parallelize(list(enumerate(texts)), args.partitions)
    df = spark.createDataFrame(rows, "id int, text string").cache()
    df.count()  # the texts in the JVM before any timing
    embed = DistilBertEmbeddings(model=path, longText="truncate", outputValue=args.output_value)
    log("Spark: warming up (workers start, open the model) ...")
    first = spark.createDataFrame(list(enumerate(texts[:64])), "id int, text string")
    cold = spark_round(spark, embed, first)
    workers: dict[int, dict[str, int]] = {}
    quiet = Quiet(budget_seconds=0 if args.no_wait else 900, settle=1.0)
    rounds = []
    for r in range(args.rounds):
        order = ["spark", "one"] if r % 2 == 0 else ["one", "spark"]
        result: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
        for system in order:
            quiet.wait()
            if system == "spark":
                result["spark_seconds"] = spark_round(spark, embed, df)
                # now: Spark stops Python workers idle for a minute, and their peaks with them
                workers.update(python_workers(spark))
            else:
                result["one"] = one_process(path, args.corpus_step, options)
        result["ratio"] = result["one"]["seconds"] / result["spark_seconds"]
        log(
            f"round {r + 1}: Spark {len(texts) / result['spark_seconds']:.1f} rows/s, one "
            f"process {len(texts) / result['one']['seconds']:.1f} rows/s "
            f"(load {result['load_average']})"
        )
        rounds.append(result)

    checks = []
    if args.memory_check:
        for limit in ("512m", "1g", "1280m"):
            log(f"memory check: spark.executor.pyspark.memory={limit} ...")
            checks.append(memory_check(path, limit, args.corpus_step))

    return {
        "master": args.master,
        "machine": machine(),
        "environment_before": before,
        "texts": len(texts),
        "tokens": tokens,
        "output_value": args.output_value,
        "partitions": args.partitions,
        "spark_cold_seconds_64_rows": cold,
        "rounds": rounds,
        "workers": workers,
        "memory_checks": checks,
        "waited_for_idle_cpu_seconds": quiet.waited,
    }


def markdown(r: dict[str, Any]) -> str:
    n, rounds = r["texts"], r["rounds"]
    spark_rate = statistics.median(n / x["spark_seconds"] for x in rounds)
    one_rate = statistics.median(n / x["one"]["seconds"] for x in rounds)
    ratio = statistics.median(x["ratio"] for x in rounds)
    mb = 1e6
    m = r["machine"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in m["blas"])
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']} "
        f"({blas}), PySpark {m['pyspark']}; load average at start {m['load_average_at_start']}.",
        "",
        f"Corpus: {n:,} pydoc_data.topics paragraphs, {r['tokens']:,} tokens (truncated to 512), "
        f"output {r['output_value']}; {len(rounds)} rounds, paired.",
        "",
        "| system | rows/s (median) | tokens/s | peak RSS |",
        "|---|---|---|---|",
    ]
    workers = sorted(r["workers"].values(), key=lambda w: -w["VmHWM"])[:2]
    peaks = " / ".join(f"{w['VmHWM'] / mb:.0f} MB" for w in workers)
    files = " / ".join(f"{w['RssFile'] / mb:.0f}" for w in workers)
    system = {
        "local": "Spark local[2]: 2 Python workers x 1 thread",
        "cluster": "Spark standalone, 2 workers x 1 core: 2 executors, 1 Python worker each",
    }[r.get("master", "local")]
    shared = {
        "local": "the one file's pages, shared",
        "cluster": "each executor maps its own shipped copy",
    }[r.get("master", "local")]
    lines.append(
        f"| {system} | {spark_rate:.1f} | "
        f"{spark_rate * r['tokens'] / n:,.0f} | {peaks} per worker (file-backed, at the end: "
        f"{files} MB: {shared}) |"
    )
    one_peak = statistics.median(x["one"]["peak_rss"] for x in rounds)
    lines.append(
        f"| model.encode, one process x 2 threads | {one_rate:.1f} | "
        f"{one_rate * r['tokens'] / n:,.0f} | {one_peak / mb:.0f} MB |"
    )
    each = ", ".join(f"{x['ratio']:.2f}" for x in rounds)
    lines += [
        "",
        f"Spark / one process, median of per-round ratios: {ratio:.2f}x "
        f"(rounds: {each}). First Spark job on 64 "
        f"rows (workers start and open the model): {r['spark_cold_seconds_64_rows']:.1f} s.",
    ]
    for c in r["memory_checks"]:
        shown = f"works, worker peak RSS {c['peak_rss'] / mb:.0f} MB" if c["ok"] else c["error"]
        lines.append(f"- spark.executor.pyspark.memory={c['limit']}: {shown}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""npdistil.spark on a real cluster: a standalone master and two workers on 127.0.0.1.

Why standalone and not ``local-cluster[2,1,1024]``: it is what a user with a small cluster
starts (``spark-class ...deploy.master.Master`` / ``...deploy.worker.Worker``), and what the
shipping defect of issue 21 showed on; each worker is an OS process of its own, so it can run in
its own mount namespace and be killed by its pid (local-cluster keeps its master and workers as
threads of the driver's JVM, and is meant for Spark's own tests).

The model lives in a folder only the driver can read: each worker starts in a mount namespace
of its own (``unshare``) where that folder is an empty tmpfs, so its executors and their Python
workers can only get the model through shipping; the tests show where they opened it (the
worker-side log line in the executors' stderr) and that the original is out of their sight.
Where ``unshare`` is refused, the workers run without the namespace and only the test that
checks the folder is out of sight is skipped, saying so.

Every process started here is stopped by its pid (SIGKILL to its process group: a worker's
executors and their Python workers are in it) when the module ends, also when a test fails.
Every wait is bounded; nothing asserts a duration. The worker-killing test comes last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -e '.[spark]')")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[spark]')")
_JAVA = os.environ.get("JAVA_HOME", "") and Path(os.environ["JAVA_HOME"], "bin", "java").exists()
if not (_JAVA or shutil.which("java")):
    pytest.skip("Spark needs Java 17 or 21, and none is installed", allow_module_level=True)

import pyspark  # noqa: E402
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

import npdistil  # noqa: E402
from npdistil.model import kernels  # noqa: E402
from npdistil.spark import DistilBertEmbeddings  # noqa: E402

SPARK_HOME = Path(pyspark.__file__).parent
START_SECONDS = 180  # for a JVM to start and register: generous on a busy 2-core machine
JOB_SECONDS = 300
TEXTS = [f"Text number {i}: the quick brown fox, again." for i in range(39)] + [None]
MODEL_NAME = "cluster-tiny.safetensors"
OPENED = re.compile(
    r"npdistil\.spark: worker (\d+) opened (\S+) \((\d+) MB\) in ([\d.]+) s, (\d+) BLAS thread"
)


def _wait(what: str, check, seconds: float = START_SECONDS):  # noqa: ANN001
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.5)


class Cluster:
    """A standalone master and two workers ("a", "b"), each started by this class and stopped
    by its pid."""

    def __init__(self, root: Path, hidden: Path) -> None:
        self.root, self.hidden = root, hidden
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_HOME": str(SPARK_HOME),
        }
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "PYTHONPATH"):
            self.env.pop(k, None)  # what the executors get is Spark's own (one BLAS thread)
        # The master's REST submission server would take the fixed port 6066.
        (root / "daemon.conf").write_text("spark.master.rest.enabled false\n")
        self.namespace = _namespace_command(hidden)
        self.url = ""

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or self.env,
            start_new_session=True,  # its own process group: executors and Python workers too
        )
        log.close()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def start(self) -> None:
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        conf = ["--properties-file", str(self.root / "daemon.conf")]
        self._start(
            "master",
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
            + ["--port", "0", "--webui-port", "0", *conf],
        )
        found = _wait(
            "the master's URL",
            lambda: re.search(
                r"Starting Spark master at (spark://127\.0\.0\.1:\d+)", self.log("master")
            ),
        )
        self.url = found.group(1)
        for name in ("a", "b"):
            work = self.root / f"work-{name}"
            work.mkdir()
            worker = [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1"]
            worker += ["--port", "0", "--webui-port", "0", "--cores", "2", "--memory", "2g"]
            worker += ["--work-dir", str(work), *conf, self.url]
            # the worker's name reaches its executors and their Python workers
            self._start(
                f"worker-{name}",
                self.namespace + worker,
                {**self.env, "NPDISTIL_TEST_WORKER": name},
            )
        _wait(
            "two workers to register with the master",
            lambda: self.log("master").count("Registering worker") >= 2,
        )

    def work(self, name: str) -> Path:
        return self.root / f"work-{name}"

    def kill(self, name: str) -> None:
        """SIGKILL the process ``name`` and its group (its executors, their Python workers)."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):  # workers first, the master last
            self.kill(name)


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    """Run ``command`` to its end, or for JOB_SECONDS at most: then it and every process it
    started (spark-submit's JVM, its Python driver, ...) are killed by its process group."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        out, err = process.communicate(timeout=JOB_SECONDS)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _namespace_command(hidden: Path) -> list[str]:
    """A command prefix running a worker in a mount namespace of its own where ``hidden`` is an
    empty tmpfs; [] where this system refuses namespaces."""
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]  # -r: a user namespace to mount in
    prefix = ["unshare", *flags, "--propagation", "private", "sh", "-c"]
    prefix += ['mount -t tmpfs -o size=1m npdistil-hidden "$0" && exec "$@"', str(hidden)]
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=60, check=False)
    return prefix if probe.returncode == 0 else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    hidden = root / "driver-only"
    hidden.mkdir()
    tiny = npdistil.load(FIXTURES / "tiny", cache_dir=root / "cache")
    shutil.copy(tiny.path, hidden / MODEL_NAME)
    running = Cluster(root, hidden)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def spark(cluster):
    """The test process's own application on the cluster: one executor per worker, one core
    each. (If test_spark.py ran first, its JVM serves this session too: only the master and the
    session's settings change.)"""
    before = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")}
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # for a JVM this session starts
    session = (
        SparkSession.builder.master(cluster.url)
        .appName("npdistil-cluster-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executor.cores", "1")
        .config("spark.cores.max", "2")
        .config("spark.executor.memory", "512m")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        # A JVM started by an earlier session (test_spark.py) keeps that session's settings as
        # system properties, which every later SparkConf reads: its logging daemon is not here.
        .config("spark.python.daemon.module", "pyspark.daemon")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        _wait("two executors", lambda: _executors(session) == 2)
        yield session
    finally:
        session.stop()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _executors(session) -> int:  # noqa: ANN001
    """How many executors the application has (the driver left out)."""
    return len(session.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1


@pytest.fixture(scope="module")
def model(cluster):
    """The model as the driver sees it, and its reference vectors come from it (driver side)."""
    return npdistil.load(cluster.hidden / MODEL_NAME)


def _opened(cluster: Cluster, app_id: str) -> list[tuple[str, int, Path, int]]:
    """(worker, pid, file, BLAS threads) of every model a Python worker of ``app_id`` opened,
    read from its executors' stderr (``<work dir>/<app>/<executor>/stderr``)."""
    found = []
    for name in ("a", "b"):
        for stderr in (cluster.work(name) / app_id).glob("*/stderr"):
            for m in OPENED.finditer(stderr.read_text(errors="replace")):
                found.append((name, int(m[1]), Path(m[2]), int(m[5])))
    return found


def _frame(spark, texts, partitions=4):  # noqa: ANN001
    rows = spark.sparkContext.parallelize(list(enumerate(texts)), partitions)
    return spark.createDataFrame(rows, "id int, text string")


def _by_id(df, column="embeddings"):  # noqa: ANN001
    return [r[column] for r in sorted(df.collect(), key=lambda r: r["id"])]


def _sentence_error(model, texts, got) -> float:  # noqa: ANN001
    """Max abs difference from the driver's ``encode``; a null text must give null."""
    expected = iter(model.encode([t for t in texts if t is not None]))
    err = 0.0
    for text, vector in zip(texts, got, strict=True):
        if text is None:
            assert vector is None
            continue
        err = max(err, float(np.abs(np.asarray(vector, np.float32) - next(expected)).max()))
    return err


# ---- the tests -----------------------------------------------------------------------------------


def test_the_executors_cannot_see_the_model_folder(spark, cluster):
    if not cluster.namespace:
        pytest.skip("unshare refused a mount namespace here: the workers see every folder")
    original = str(cluster.hidden / MODEL_NAME)

    def look(rows):  # noqa: ANN001 (runs in the executors' Python workers)
        yield (os.environ.get("NPDISTIL_TEST_WORKER"), os.path.exists(original))

    seen = set(spark.sparkContext.parallelize(range(8), 8).mapPartitions(look).collect())
    print(
        f"(worker, sees {original}): {sorted(seen)}; the driver sees it: {os.path.exists(original)}"
    )
    assert seen == {("a", False), ("b", False)}
    assert os.path.exists(original)


def test_two_transforms_in_one_application_use_the_shipped_copy(spark, cluster, model):
    df = _frame(spark, TEXTS)
    path = str(cluster.hidden / MODEL_NAME)
    got = _by_id(DistilBertEmbeddings(model=path).transform(df))
    err = _sentence_error(model, TEXTS, got)
    # The second transform of the application (the defect: refused on a cluster)
    words = _by_id(DistilBertEmbeddings(model=path, outputValue="word_embeddings").transform(df))
    expected = iter(
        model.encode([t for t in TEXTS if t is not None], output_value="word_embeddings")
    )
    word_err = 0.0
    for text, row in zip(TEXTS, words, strict=True):
        if text is None:
            assert row is None
            continue
        want = next(expected)
        assert [a["result"] for a in row] == want.words
        assert [[a["begin"], a["end"] + 1] for a in row] == want.offsets.tolist()
        vectors = np.array([a["embeddings"] for a in row], np.float32)
        word_err = max(word_err, float(np.abs(vectors - want.vectors).max()))
    print(f"executors vs the driver's encode: sentences {err:.3g}, words {word_err:.3g}")
    assert err <= 1e-5 and word_err <= 1e-5

    shipped = [u for u in spark.sparkContext.listFiles if u.endswith("/" + MODEL_NAME)]
    assert len(shipped) == 1 and shipped[0].startswith("spark://127.0.0.1:"), shipped
    app = spark.sparkContext.applicationId
    opened = _wait("the workers' log lines", lambda: _opened(cluster, app), 60)
    print("opened, per the executors' stderr:", *opened, sep="\n  ")
    assert {w for w, *_ in opened} == {"a", "b"}  # both executors embedded
    for worker, _, file, threads in opened:  # each its own copy, in its work dir; one thread
        assert file.name == MODEL_NAME and file.is_relative_to(cluster.work(worker) / app)
        assert threads == 1


def test_a_pipeline_saved_loaded_and_run_twice(spark, cluster, model, tmp_path):
    path = str(cluster.hidden / MODEL_NAME)
    stages = [
        DistilBertEmbeddings(model=path, outputCol="sentence"),
        DistilBertEmbeddings(model=path, outputCol="pieces", outputValue="token_embeddings"),
    ]
    df = _frame(spark, TEXTS)
    Pipeline(stages=stages).fit(df).write().save(str(tmp_path / "saved"))
    loaded = PipelineModel.load(str(tmp_path / "saved"))
    first = loaded.transform(df).collect()
    second = PipelineModel.load(str(tmp_path / "saved")).transform(df).collect()
    by_id = {r["id"]: r for r in first}
    assert len(first) == len(second) == len(TEXTS)
    for r in second:  # run again, same rows
        assert r["sentence"] == by_id[r["id"]]["sentence"]
        assert r["pieces"] == by_id[r["id"]]["pieces"]
    err = _sentence_error(model, TEXTS, [by_id[i]["sentence"] for i in range(len(TEXTS))])
    print(f"loaded pipeline, run twice: sentence vectors vs encode {err:.3g}")
    assert err <= 1e-5


_SUBMITTED = """
import json, sys
from pyspark.sql import SparkSession
from npdistil.spark import DistilBertEmbeddings

name = sys.argv[1]
spark = SparkSession.builder.getOrCreate()
texts = [(0, "Hello world!"), (1, None), (2, "Shipped by --files.")]
df = spark.createDataFrame(texts, "id int, text string")
out = {"app": spark.sparkContext.applicationId, "files": spark.sparkContext.listFiles}
for output_value in ("sentence_embedding", "word_embeddings"):  # two transforms
    rows = DistilBertEmbeddings(model=name, outputValue=output_value).transform(df.repartition(2))
    got = [r.embeddings for r in sorted(rows.collect())]
    if output_value == "word_embeddings":
        got = [g if g is None else [a.result for a in g] for g in got]
    out[output_value] = got
print("RESULT " + json.dumps(out))
spark.stop()
"""


def test_spark_submit_files_with_the_model_named_by_its_file_name(spark, cluster, model, tmp_path):
    """The recipe ``spark-submit --files model.safetensors job.py`` with ``model=
    "model.safetensors"``, for real: a second application, from a folder without the file."""
    (tmp_path / "job.py").write_text(_SUBMITTED)
    command = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url]
    for setting in (
        "spark.driver.host=127.0.0.1",
        "spark.driver.bindAddress=127.0.0.1",
        "spark.ui.enabled=false",
        "spark.ui.showConsoleProgress=false",
        "spark.executor.cores=1",
        "spark.cores.max=2",
        "spark.executor.memory=512m",
    ):
        command += ["--conf", setting]
    command += ["--files", str(cluster.hidden / MODEL_NAME), str(tmp_path / "job.py"), MODEL_NAME]
    assert not (tmp_path / MODEL_NAME).exists()
    done = _run(command, cwd=tmp_path, env=cluster.env)
    result = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and result, done.stderr[-4000:]
    out = json.loads(result[0][len("RESULT ") :])
    print(f"spark-submit: files {out['files']}")
    assert out["files"] == [f"spark://127.0.0.1:{out['files'][0].split(':')[2]}"]
    hello, null, shipped = out["sentence_embedding"]
    assert null is None
    want = model.encode(["Hello world!", "Shipped by --files."])
    np.testing.assert_allclose([hello, shipped], want, atol=1e-5)
    assert out["word_embeddings"] == [
        ["Hello", "world", "!"],
        None,
        ["Shipped", "by", "-", "-", "files", "."],
    ]
    opened = _wait("the workers' log lines", lambda: _opened(cluster, out["app"]), 60)
    assert opened and all(f.is_relative_to(cluster.work(w) / out["app"]) for w, _, f, _ in opened)


def test_a_real_model_on_executors_equals_the_driver_within_thread_rounding(
    spark, cluster, minilm_folder
):
    """all-MiniLM-L6-v2 on real paragraphs: the executors run one BLAS thread, the driver's
    encode as many as it has, and products summed in another order round differently: equal
    within ~1e-6, not bit for bit. Words and offsets are the same exactly."""
    from pydoc_data.topics import topics

    converted = npdistil.load(minilm_folder, cache_dir=cluster.root / "cache")
    shutil.copy(converted.path, cluster.hidden / "minilm.safetensors")
    here = npdistil.load(cluster.hidden / "minilm.safetensors")
    texts = [p.strip() for t in list(topics.values())[:12] for p in t.split("\n\n") if p.strip()]
    texts = texts[:48]
    df = _frame(spark, texts)
    path = str(cluster.hidden / "minilm.safetensors")
    got = _by_id(DistilBertEmbeddings(model=path).transform(df))
    sentence_err = _sentence_error(here, texts, got)
    words = _by_id(DistilBertEmbeddings(model=path, outputValue="word_embeddings").transform(df))
    word_err = 0.0
    for row, want in zip(words, here.encode(texts, output_value="word_embeddings"), strict=True):
        assert [a["result"] for a in row] == want.words
        assert [[a["begin"], a["end"] + 1] for a in row] == want.offsets.tolist()
        vectors = np.array([a["embeddings"] for a in row], np.float32)
        word_err = max(word_err, float(np.abs(vectors - want.vectors).max()))
    print(
        f"all-MiniLM-L6-v2, {len(texts)} paragraphs, executors (1 thread) vs the driver's encode "
        f"({kernels.n_threads()} threads): sentences {sentence_err:.3g}, words "
        f"{word_err:.3g}"
    )
    assert sentence_err <= 1e-5 and word_err <= 5e-5


def test_a_text_npdistil_refuses_fails_the_job_naming_its_row(spark, cluster):
    """A deterministic error: Spark still tries the task spark.task.maxFailures (4) times."""
    texts = ["fine", "word " * 100, "fine too"]  # the tiny model's window is 40 tokens
    embed = DistilBertEmbeddings(model=str(cluster.hidden / MODEL_NAME), longText="error")
    sc = spark.sparkContext
    sc.setJobGroup("refused", "a text npdistil refuses")
    try:
        with pytest.raises(Exception, match="TextTooLongError") as caught:
            embed.transform(_frame(spark, texts, partitions=1)).collect()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    message = str(caught.value)
    assert "column 'text', partition 0, row 1 ('word word" in message
    tracker = sc.statusTracker()
    stages = [
        s for j in tracker.getJobIdsForGroup("refused") for s in tracker.getJobInfo(j).stageIds
    ]
    failed = sum(tracker.getStageInfo(s).numFailedTasks for s in stages)
    print(f"{message.splitlines()[-1][:160]}...; failed task attempts: {failed}")
    assert failed == 4  # spark.task.maxFailures: Spark cannot be told the error is for good


def test_a_worker_killed_mid_job_loses_no_row(spark, cluster, model, tmp_path):
    """Tasks wait at a gate (a marker file) until both executors run one; then worker "a" and
    its executor are SIGKILLed, the gate opens, and Spark re-runs the lost tasks on "b".
    Runs last: the cluster has one worker afterwards."""
    gate = tmp_path / "gate"
    gate.mkdir()
    texts = [f"Row {i} of the job that loses a worker." for i in range(64)]

    def hold(index, rows):  # noqa: ANN001 (runs in the executors' Python workers)
        worker = os.environ.get("NPDISTIL_TEST_WORKER")
        (gate / f"started-{index}-{worker}-{os.getpid()}").touch()
        deadline = time.monotonic() + 240
        while index >= 2 and not (gate / "go").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the test never opened the gate")
            time.sleep(0.2)
        yield from rows

    rows = spark.sparkContext.parallelize(list(enumerate(texts)), 8).mapPartitionsWithIndex(hold)
    df = spark.createDataFrame(rows, "id int, text string")
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["rows"] = (
                DistilBertEmbeddings(model=str(cluster.hidden / MODEL_NAME)).transform(df).collect()
            )
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    job = threading.Thread(target=run, daemon=True)
    job.start()

    def blocked() -> set[str]:  # workers with a task waiting at the gate
        return {
            p.name.split("-")[2] for p in gate.glob("started-*") if int(p.name.split("-")[1]) >= 2
        }

    try:
        _wait(
            "a task waiting at the gate on each worker",
            lambda: blocked() == {"a", "b"},
            JOB_SECONDS,
        )
        cluster.kill("worker-a")
    finally:
        (gate / "go").touch()
    job.join(JOB_SECONDS)
    assert not job.is_alive(), "the job did not finish"
    assert "error" not in outcome, outcome.get("error")
    got = sorted(outcome["rows"], key=lambda r: r["id"])  # type: ignore[arg-type]
    started = sorted(p.name for p in gate.glob("started-*"))
    rerun = {int(n.split("-")[1]) for n in started if n.split("-")[2] == "a"} & {
        int(n.split("-")[1]) for n in started if n.split("-")[2] == "b"
    }
    print(f"{len(got)} rows back; partitions started on a, then re-run on b: {sorted(rerun)}")
    assert [r["id"] for r in got] == list(range(len(texts)))  # every row, once
    assert rerun, started  # a task lost with worker a ran again on b
    err = float(np.abs(np.array([r["embeddings"] for r in got]) - model.encode(texts)).max())
    print(f"vectors vs encode: {err:.3g}")
    assert err <= 1e-5

"""The ``npdistil`` command as a Unix tool, run as the installed console script in a subprocess.

Every run inherits the per-test NPDISTIL_CACHE and HF_HUB_CACHE of conftest's `_isolated_cache`.
Numbers are checked against the Python API (itself checked against transformers elsewhere) or,
for word ids and parameter counts, against what transformers saved in the fixtures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import FIXTURES, checkpoint_copy, tiny_reference

import npdistil
from npdistil.cli.output import float32_json
from npdistil.weights.loader import local_entry

NPDISTIL = Path(sys.executable).parent / "npdistil"
TINY = FIXTURES / "tiny"
META, REF = tiny_reference()
TEXTS = META["texts"]


def run(*args: str | Path, stdin: bytes | None = None, **kw) -> subprocess.CompletedProcess:
    """The real `npdistil` program; stdout and stderr captured as bytes.

    On machines that force OpenBLAS's Haswell kernel, every run rightly warns about it once
    (npdistil.system.SlowBlasWarning); that one line is taken out of stderr here, so that the
    tests check the rest of it the same way with the variable set and unset.
    """
    assert NPDISTIL.is_file(), f"no {NPDISTIL}: install the package (pip install -e .) first"
    p = subprocess.run(
        [str(NPDISTIL), *map(str, args)], input=stdin, capture_output=True, timeout=600, **kw
    )
    p.stderr = without_blas_warning(p.stderr)
    return p


def without_blas_warning(stderr: bytes) -> bytes:
    lines = stderr.splitlines(keepends=True)
    return b"".join(x for x in lines if not x.startswith(b"npdistil: warning: NumPy's BLAS"))


def embed(*args: str | Path, **kw) -> subprocess.CompletedProcess:
    return run("embed", "--model", TINY, *args, **kw)


def one_line_error(p: subprocess.CompletedProcess, status: int, *needles: str) -> str:
    """The run failed with `status` and said so in one line naming every needle."""
    err = p.stderr.decode()
    assert p.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return npdistil.load(TINY, cache_dir=tmp_path_factory.mktemp("cache"))


def short_texts(n: int) -> list[str]:
    """n texts of 1 to 8 words, each well within the tiny model's 40-token window."""
    words = TEXTS[4].split()
    return [" ".join(words[i % 30 : i % 30 + 1 + i % 8]) for i in range(n)]


# ---- 2. stdin, stdout, pipes --------------------------------------------------------------------


def test_float32_json_round_trips_every_float32_in_its_shortest_form():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    values = np.concatenate([values, np.float32([0.1, -0.0, 1e-45, 3.4028235e38, 1.0, 1e-5])])
    back = np.array(json.loads(float32_json(values)), dtype=np.float32)  # as a JSON reader does
    same = (back.view(np.uint32) == values.view(np.uint32)).mean()
    print(f"float32_json: {same:.6%} of {values.size} float32 values read back bit-exactly")
    assert same == 1.0
    assert float32_json(np.float32([0.1, 1 / 3])) == "[0.1,0.33333334]"  # not 0.10000000149...


def test_output_dash_writes_json_lines_to_stdout(model):
    p = embed("--output", "-", "Hello world!", "The")
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    records = jsonl(p.stdout)
    assert [r["id"] for r in records] == [1, 2]  # ids are 1-based, as in messages
    expected = model.encode(["Hello world!", "The"])
    got = np.array([r["embedding"] for r in records], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    arrays = re.findall(rb'"embedding": \[([^]]*)\]', p.stdout)
    numbers = [n.decode() for a in arrays for n in a.split(b",")]
    assert len(numbers) == 2 * 20
    digits = max(len(n.lstrip("-").split("e")[0].replace(".", "").strip("0")) for n in numbers)
    print(f"stdout jsonl: at most {digits} significant digits per number (float64 repr: 17)")
    assert digits <= 9
    assert all(str(np.float32(float(n))) == n for n in numbers)  # float32's shortest form


def test_input_dash_reads_stdin(model):
    texts = ["Hello world!", "DistilBERT is cased.", "The"]
    p = embed("--input", "-", "--output", "-", stdin="\n".join(texts).encode())
    assert p.returncode == 0, p.stderr
    got = np.array([r["embedding"] for r in jsonl(p.stdout)], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-5)


def test_binary_formats_to_a_pipe(model):
    texts = short_texts(50)
    p = embed("--input", "-", "--output", "-", "--format", "npy", stdin="\n".join(texts).encode())
    assert p.returncode == 0, p.stderr
    got = np.load(__import__("io").BytesIO(p.stdout))
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-5)


@pytest.mark.parametrize("output", [["--output", "-"], []])
def test_a_closed_pipe_ends_quietly_as_unix_tools_do(tmp_path, output):
    # Token vectors of 600 texts: hundreds of kB, far more than a pipe holds (64 kB), so the
    # writer meets the closed pipe whatever the timing.
    (tmp_path / "in.txt").write_text("\n".join(short_texts(600)) + "\n")
    script = f'"$@" | head -n 2 > "{tmp_path}/head.txt"; echo "${{PIPESTATUS[0]}}"'
    cmd = [str(NPDISTIL), "embed", "--model", str(TINY), "--input", str(tmp_path / "in.txt")]
    cmd += ["--output-value", "token", *output]
    p = subprocess.run(["bash", "-c", script, "sh", *cmd], capture_output=True, timeout=600)
    p.stderr = without_blas_warning(p.stderr)
    print(f"npdistil ... | head -n 2: exit status {p.stdout.decode().strip()}, stderr {p.stderr!r}")
    assert p.stdout.decode().strip() == "141"  # killed by SIGPIPE, as `cat` or `yes` would be
    assert p.stderr == b""  # no traceback, no "Broken pipe" message
    assert len((tmp_path / "head.txt").read_text().splitlines()) == 2


def test_non_regular_targets_are_written_in_place_never_replaced(tmp_path, model):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link_to_fifo, link_to_null = tmp_path / "out.jsonl", tmp_path / "null.npy"
    link_to_fifo.symlink_to(fifo)
    link_to_null.symlink_to(os.devnull)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    p = embed("--output", link_to_fifo, "Hello world!", "The")
    reader.join(timeout=600)
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in jsonl(received[0])] == [1, 2]
    assert embed("--output", link_to_null, "Hello world!").returncode == 0
    assert link_to_fifo.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert link_to_null.is_symlink() and os.readlink(link_to_null) == os.devnull
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)
    # /dev/stdout itself (a pipe here): written directly, left a symlink (root may rename over it)
    p = embed("--output", "/dev/stdout", "Hello world!")
    assert p.returncode == 0 and jsonl(p.stdout)[0]["id"] == 1, p.stderr
    assert os.path.islink("/dev/stdout")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["fifo", "npdistil-cache", "null.npy",
                                                          "out.jsonl"]  # fmt: skip


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    out, converted = tmp_path / "out.npy", tmp_path / "model.safetensors"
    assert embed("--output", out, "Hello world!", umask=umask).returncode == 0
    assert run("convert", TINY, converted, umask=umask).returncode == 0
    cached = list((tmp_path / "npdistil-cache").rglob("*.safetensors"))
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in [out, converted, *cached]}
    print(f"umask {oct(umask)}: {modes}")
    assert set(modes.values()) == {oct(0o666 & ~umask)}


# ---- 2. options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--chunk-size", "0"),
        ("--chunk-size", "-1"),
        ("--chunk-size", "many"),
        ("--batch-size", "0"),
        ("--window", "0"),
        ("--stride", "-1"),
    ],
)
def test_numeric_options_are_checked_with_a_one_line_error(tmp_path, option, value):
    p = embed(option, value, "--output", tmp_path / "out.npy", "Hello world!")
    one_line_error(p, 2, f"argument {option}: must be")
    assert not (tmp_path / "out.npy").exists()


def test_a_window_the_model_cannot_take_is_a_one_line_error(tmp_path):
    one_line_error(embed("--window", "100", "Hello"), 1, "window 100", "40 positions")
    one_line_error(embed("--window", "10", "--stride", "8", "Hello"), 1, "stride must be in")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--pooling", "cls", "--output-value", "word"], "--pooling applies to"),
        (["--prompt", "query: ", "--output-value", "token"], "--prompt applies to"),
        (["--normalize", "--output-value", "token"], "--normalize applies to"),
        (["--word-pooling", "mean"], "--word-pooling applies to"),
        (["--include-special-tokens"], "--include-special-tokens applies to"),
        (["--include-special-tokens", "--output-value", "word"], "--include-special-tokens"),
        (["--long-text", "truncate", "--stride", "3"], "--stride applies to"),
        (["--revision", "v2"], "--revision is for Hub ids"),
        (["--field", "body"], "--field applies to .jsonl input"),
        (["--encoding", "latin-1"], "--encoding applies to --input"),
        (["--format", "npy"], "--format applies to --output"),
        (["--output", "x.npy", "--output-value", "token"], "npy output holds sentence"),
        (["--output", "x.csv"], "can't tell the format"),
    ],
)
def test_options_that_would_be_ignored_are_refused(options, needle):
    one_line_error(embed(*options, "Hello world!"), 2, needle)


def test_texts_and_input_are_one_or_the_other(tmp_path):
    (tmp_path / "in.txt").write_text("Hello\n")
    one_line_error(embed("Hello", "--input", tmp_path / "in.txt"), 2, "one of the two")
    one_line_error(embed(), 2, "one of the two")


# ---- 2. reading files ---------------------------------------------------------------------------


def test_non_utf8_input_names_file_and_line_and_can_be_decoded_otherwise(tmp_path, model):
    path = tmp_path / "in.txt"
    path.write_bytes("Hello world!\nCafé\n\nna\xefve\n".encode("latin-1"))
    p = embed("--input", path)
    one_line_error(p, 1, f"{path}:2: not valid utf-8", "--encoding", "--errors replace")
    p = embed("--input", path, "--encoding", "latin-1", "--output", "-")
    assert p.returncode == 0, p.stderr
    got = np.array([r["embedding"] for r in jsonl(p.stdout)], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(["Hello world!", "Café", "naïve"]), atol=1e-5)
    p = embed("--input", path, "--errors", "replace")  # printed: ids and texts as read
    assert p.returncode == 0, p.stderr
    shown = [line for line in p.stdout.decode().splitlines() if line.startswith("[")]
    assert shown == ["[1] 'Hello world!'", "[2] 'Caf\ufffd'", "[4] 'na\ufffdve'"]
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("Hello world!\nCafé\n", encoding="utf-16")  # newlines split code units
    p = embed("--input", utf16, "--encoding", "utf-16", "--output", "-")
    got = np.array([r["embedding"] for r in jsonl(p.stdout)], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(["Hello world!", "Café"]), atol=1e-5)


def test_blank_lines_are_skipped_in_both_formats_and_ids_are_line_numbers(tmp_path, model):
    lines = ["Hello world!", "", "The cat", "   ", "DistilBERT is cased."]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    records = [json.dumps({"text": t}) if t.strip() else t for t in lines]
    (tmp_path / "in.jsonl").write_text("\n".join(records) + "\n")
    expected = model.encode([t for t in lines if t.strip()])
    for name in ("in.txt", "in.jsonl"):
        out = tmp_path / f"out-{name}.jsonl"
        p = embed("--input", tmp_path / name, "--output", out)
        assert p.returncode == 0, p.stderr
        assert "skipped 2 blank line(s)" in p.stderr.decode()
        got = jsonl(out.read_bytes())
        assert [r["id"] for r in got] == [1, 3, 5]  # the line numbers, in messages too
        np.testing.assert_allclose([r["embedding"] for r in got], expected, atol=1e-5)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n\n{"text": 3}\n')
    one_line_error(embed("--input", tmp_path / "bad.jsonl"), 1, "bad.jsonl:3: no string field")


def test_a_text_is_named_by_its_line_in_errors_and_warnings(tmp_path):
    lines = ["short", "", TEXTS[4]]  # line 3 is longer than the tiny model's 40 tokens
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    p = embed("--input", tmp_path / "in.txt", "--long-text", "error")
    one_line_error(p, 1, f"{tmp_path / 'in.txt'}:3 has more tokens than the window")
    p = embed("--input", tmp_path / "in.txt", "--long-text", "truncate", "--chunk-size", "1")
    assert p.returncode == 0, p.stderr
    assert "npdistil: warning: 1 text(s) longer than 40 tokens" in p.stderr.decode()
    assert f"(first: {tmp_path / 'in.txt'}:3)" in p.stderr.decode()


@pytest.mark.parametrize("suffix", [".csv", ".json", ".tsv"])
def test_structured_inputs_are_refused_unless_a_format_is_given(tmp_path, suffix, model):
    path = tmp_path / f"in{suffix}"
    path.write_text("Hello world!\nThe\n")
    one_line_error(embed("--input", path), 2, f"not {suffix}", "--input-format")
    p = embed("--input", path, "--input-format", "txt", "--output", "-")
    assert p.returncode == 0 and len(jsonl(p.stdout)) == 2, p.stderr


def test_progress_moves_per_batch_and_is_shown_without_output(tmp_path):
    texts = short_texts(400)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    # Every update drawn (tqdm's own settings, from the environment): no timing involved.
    env = {**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
    p = embed("--input", tmp_path / "in.txt", "--output", tmp_path / "out.npy", "--progress",
              "--batch-size", "32", env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    shown = sorted({int(n) for n in re.findall(rb"(\d+)/400", p.stderr)})
    print(f"progress of 400 texts in one 4096-text chunk, batches of 32: {shown}")
    assert shown == [0, *range(32, 400, 32), 400]  # one step per batch of the one chunk
    p = embed("--progress", "Hello world!", "The", env=env)
    assert p.returncode == 0 and b"2/2" in p.stderr and b"[1] 'Hello world!'" in p.stdout


# ---- 2. output files ----------------------------------------------------------------------------


def test_sentence_npz_is_one_array_and_token_npz_has_word_ids(tmp_path, model):
    texts = short_texts(7)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    run_args = ("--input", tmp_path / "in.txt", "--chunk-size", "3")
    assert embed(*run_args, "--output", tmp_path / "s.npz").returncode == 0
    z = np.load(tmp_path / "s.npz")
    assert sorted(z.files) == ["embeddings", "ids"]
    np.testing.assert_allclose(z["embeddings"], model.encode(texts), atol=1e-5)
    assert z["ids"].tolist() == list(range(1, 8))
    p = embed("--output", tmp_path / "t.npz", "--output-value", "token", *TEXTS[:2])
    assert p.returncode == 0, p.stderr
    z = np.load(tmp_path / "t.npz")
    for i in range(2):  # word ids as transformers' tokenizer gave them, specials dropped
        ref = REF["tiny/word_ids"][i][REF["tiny/word_ids"][i] >= 0]
        np.testing.assert_array_equal(z[f"word_ids_{i}"], ref)
        assert len(z[f"tokens_{i}"]) == len(z[f"vectors_{i}"]) == len(ref)
    assert z["ids"].tolist() == [1, 2]


def test_string_ids_from_jsonl_are_kept_in_npz(tmp_path):
    rows = [{"id": "doc-7", "text": "Hello"}, {"text": "no id"}, {"id": 12, "text": "twelve"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert embed("--input", tmp_path / "in.jsonl", "--output", tmp_path / "o.npz").returncode == 0
    assert np.load(tmp_path / "o.npz")["ids"].tolist() == ["doc-7", "2", "12"]


@pytest.mark.parametrize("fmt", ["npy", "npz", "jsonl"])
def test_empty_input_writes_zero_texts_of_the_model_width(tmp_path, fmt):
    (tmp_path / "in.txt").write_text("\n\n")
    out = tmp_path / f"out.{fmt}"
    p = embed("--input", tmp_path / "in.txt", "--output", out)
    assert p.returncode == 0, p.stderr
    if fmt == "npy":
        assert np.load(out).shape == (0, 20)
    elif fmt == "npz":
        z = np.load(out)
        assert z["embeddings"].shape == (0, 20) and z["ids"].shape == (0,)
    else:
        assert out.read_bytes() == b""


def test_a_dense_module_sets_the_width_of_sentence_output_even_when_empty(tmp_path):
    st = FIXTURES / "st-distilbert-cls-dense-normalize"
    width = json.loads((st / "2_Dense" / "config.json").read_text())["out_features"]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "two.txt").write_text("Hello world!\nThe\n")
    for name, rows in (("empty", 0), ("two", 2)):
        out = tmp_path / f"{name}.npy"
        p = run("embed", "--model", st, "--input", tmp_path / f"{name}.txt", "--output", out)
        assert p.returncode == 0, p.stderr
        assert np.load(out).shape == (rows, width)


def test_stride_is_refused_where_the_model_truncates_instead_of_windowing():
    st = FIXTURES / "st-distilbert-cls-dense-normalize"  # truncates at its max_seq_length
    one_line_error(run("embed", "--model", st, "--stride", "2", "Hi"), 2, "--stride applies")
    p = run("embed", "--model", st, "--stride", "2", "--long-text", "window", "Hi")
    assert p.returncode == 0, p.stderr


def test_bad_input_midway_leaves_no_output_file(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "ok"}\n' * 5 + "not json\n")
    p = embed("--input", tmp_path / "in.jsonl", "--output", tmp_path / "o.npy", "--chunk-size", "2")
    one_line_error(p, 1, "in.jsonl:6: not valid JSON")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.jsonl", "npdistil-cache"]


# ---- 3. no network ------------------------------------------------------------------------------


@pytest.fixture
def refusing_endpoint(monkeypatch) -> str:
    """An endpoint on 127.0.0.1 that refuses connections (a port bound but not listening, so
    nothing else can take it during the test), and huggingface_hub online for subprocesses."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    yield url
    sock.close()


def test_an_unreachable_hub_fails_at_once_with_one_message(refusing_endpoint):
    start = time.monotonic()
    p = run("embed", "--model", "nope/folder", "Hello")
    seconds = time.monotonic() - start
    print(f"refused connection: exit {p.returncode} after {seconds:.2f} s: {p.stderr.decode()}")
    err = one_line_error(p, 1, "connection refused", "--offline", "HF_HUB_OFFLINE=1",
                         "local checkpoint folder", "no local folder 'nope/folder'")  # fmt: skip
    assert "Retry" not in err  # huggingface_hub announces each retry; none was made


def test_unreachable_hosts_are_asked_once_not_retried(fake_hub, monkeypatch):
    """In-process, counting connection attempts: one for an unresolvable host name, one for a
    refused connection (huggingface_hub alone makes 7, 23 s apart)."""
    from huggingface_hub import constants

    from npdistil.errors import HubUnreachableError
    from npdistil.weights import hub

    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        if host == "npdistil-test.invalid":  # never asked of a real resolver
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    for endpoint, reason in [
        ("http://npdistil-test.invalid", "can't resolve its host name"),
        (f"http://127.0.0.1:{closed.getsockname()[1]}", "connection refused"),
    ]:
        lookups.clear()
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        with pytest.raises(HubUnreachableError, match=reason):
            hub.download("org/model", "main")
        print(f"{endpoint}: {len(lookups)} connection attempt(s), sleeps {fake_hub.retry_sleeps}")
        assert len(lookups) == 1 and fake_hub.retry_sleeps == []
    closed.close()


def test_hub_retries_on_5xx_are_kept_and_each_message_is_printed_once(fake_hub, tmp_path):
    files = {f.name: f.read_bytes() for f in TINY.iterdir() if f.name != "pytorch_model.bin"}
    fake_hub.add_repo("org/tiny", files)
    # The first HEAD of the weights is not retried by huggingface_hub, its second one is.
    fake_hub.fail("model.safetensors", 503, times=2, method="HEAD")
    p = run("embed", "--model", "org/tiny", "Hello")
    err = p.stderr.decode()
    print(f"two HTTP 503 then success: exit {p.returncode}, stderr:\n{err}")
    assert p.returncode == 0, err
    lines = err.splitlines()
    assert len(lines) == len(set(lines))  # each message once
    assert sum("503" in line for line in lines) == 1 and sum("Retrying" in x for x in lines) == 1
    heads = [r for r in fake_hub.request_log if r.method == "HEAD" and "model.safe" in r.path]
    assert len(heads) == 3  # refused twice, then answered: the retry was kept


def test_offline_flag_makes_no_request(fake_hub, tmp_path):
    files = {f.name: f.read_bytes() for f in TINY.iterdir() if f.name != "pytorch_model.bin"}
    fake_hub.add_repo("org/tiny", files)
    assert run("embed", "--model", "org/tiny", "Hello").returncode == 0  # downloads, converts
    cache = Path(os.environ["NPDISTIL_CACHE"])
    shutil.rmtree(cache)  # only the Hugging Face cache is left: each run goes through the hub
    fake_hub.reset_requests()
    assert run("embed", "--model", "org/tiny", "Hello").returncode == 0
    online = len(fake_hub.requests)
    shutil.rmtree(cache)
    fake_hub.reset_requests()
    p = run("embed", "--offline", "--model", "org/tiny", "--output", "-", "Hello")
    print(f"requests to the Hub: {online} online, {len(fake_hub.requests)} with --offline")
    assert p.returncode == 0 and len(jsonl(p.stdout)) == 1, p.stderr
    assert online > 0 and fake_hub.requests == []
    p = run("embed", "--offline", "--model", "org/other", "Hello")
    one_line_error(p, 1, "offline mode is on", "no local folder 'org/other'")
    assert fake_hub.requests == []


# ---- 4. the converted cache ---------------------------------------------------------------------

_HOLD_A_TEMP = textwrap.dedent(
    """
    import sys, time
    from npdistil.weights.storage import open_replacing
    with open_replacing(sys.argv[1]) as f:  # a live writer, holding its temporary file
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        sys.stdin.readline()  # until told to finish
        f.write(b" and the rest")
    """
)


def test_abandoned_temporary_files_go_but_not_those_of_live_writers(tmp_path):
    cache = Path(os.environ["NPDISTIL_CACHE"])
    local = cache / "local"
    local.mkdir(parents=True)
    abandoned, recent = local / ".a.safetensors.x1.tmp", local / ".b.safetensors.x2.tmp"
    abandoned.write_bytes(b"left by a killed conversion")
    recent.write_bytes(b"just started")
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_A_TEMP, str(local / "c.safetensors")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert writer.stdout.readline() == b"writing\n"
    [live] = [p for p in local.iterdir() if p.name.startswith(".c.")]
    two_hours_ago = time.time() - 7200
    for p in (abandoned, live):
        os.utime(p, (two_hours_ago, two_hours_ago))
    listed = run("cache", "list").stdout.decode()
    assert "abandoned" in listed and "in use" in listed and "writing" in listed, listed
    p = run("cache", "prune")
    assert p.returncode == 0, p.stderr
    assert not abandoned.exists() and recent.exists() and live.exists()
    writer.communicate(b"go\n", timeout=600)
    assert writer.returncode == 0
    assert (local / "c.safetensors").read_bytes() == b"partial and the rest"
    # A conversion into the cache sweeps too.
    os.utime(recent, (two_hours_ago, two_hours_ago))
    assert embed("Hello").returncode == 0
    assert not recent.exists()


def _npdistil_file(path: Path, checkpoint: Path, **source: str) -> Path:
    return npdistil.convert_folder(checkpoint, path, source=source)


def test_cache_list_prune_and_clear(tmp_path, monkeypatch):
    cache = Path(os.environ["NPDISTIL_CACHE"])
    gone = checkpoint_copy(TINY, tmp_path / "gone", "model.safetensors")
    changed = checkpoint_copy(TINY, tmp_path / "changed", "model.safetensors")
    for folder in (TINY, gone, changed):
        assert embed("--model", folder, "Hello").returncode == 0
    shutil.rmtree(gone)  # its converted copy is now an orphan
    os.utime(changed / "model.safetensors", (1, 1))  # its converted copy is now stale
    legacy = cache / "local" / "tiny-0123456789abcdef.safetensors"  # the old naming scheme
    _npdistil_file(legacy, TINY, folder=str(TINY.resolve()))
    (cache / "local" / "broken.safetensors").write_bytes(b"not safetensors at all")
    hf_refs = Path(os.environ["HF_HUB_CACHE"]) / "models--org--m" / "refs"
    hf_refs.mkdir(parents=True)
    (hf_refs / "main").write_text("b" * 40)  # main moved on to commit b...
    old = _npdistil_file(cache / "hub" / "org--m" / f"{'a' * 40}.safetensors", TINY,
                         repo="org/m", commit="a" * 40)  # fmt: skip
    new = _npdistil_file(cache / "hub" / "org--m" / f"{'b' * 40}.safetensors", TINY,
                         repo="org/m", commit="b" * 40)  # fmt: skip
    older = cache / "hub" / "org--old" / f"{'c' * 40}.safetensors"  # an older npdistil's file
    _npdistil_file(older, TINY, repo="org/old", commit="c" * 40)
    metadata = safetensors.safe_open(older, "np").metadata()
    tensors = safetensors.numpy.load_file(older)
    safetensors.numpy.save_file(tensors, older, metadata={**metadata, "format_version": "1"})
    (cache / "notes.txt").write_text("not npdistil's")

    listed = run("cache", "list").stdout.decode()
    print(listed)
    states = {line.split()[-1]: line.split()[2] for line in listed.splitlines()[1:-1]}
    assert states == {
        f"hub/org--m/{'a' * 40}.safetensors": "stale",
        f"hub/org--old/{'c' * 40}.safetensors": "stale",
        f"hub/org--m/{'b' * 40}.safetensors": "current",
        str(local_entry(cache, TINY).relative_to(cache)): "current",
        str(local_entry(cache, changed).relative_to(cache)): "stale",
        str(local_entry(cache, tmp_path / "gone").relative_to(cache)): "orphan",
        "local/tiny-0123456789abcdef.safetensors": "stale",
        "local/broken.safetensors": "unusable",
    }
    assert f"{old.stat().st_size / 1e6:.1f} MB" in listed or "kB" in listed
    before = sorted(p for p in cache.rglob("*") if p.is_file())
    assert "would remove 6 file(s)" in run("cache", "prune", "--dry-run").stdout.decode()
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == before
    p = run("cache", "prune")
    assert p.returncode == 0 and "removed 6 file(s)" in p.stdout.decode(), p.stdout
    left = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert left == sorted(
        [
            str(new.relative_to(cache)),
            "notes.txt",
            str(local_entry(cache, TINY).relative_to(cache)),
        ]
    )
    assert "removed 2 file(s)" in run("cache", "clear").stdout.decode()
    assert [p.name for p in cache.rglob("*") if p.is_file()] == ["notes.txt"]


def test_convert_writes_the_output_once_without_a_cache_copy(tmp_path, fake_hub):
    out = tmp_path / "out" / "model.safetensors"
    p = run("convert", TINY, out)
    assert p.returncode == 0, p.stderr
    ids, mask = REF["tiny/input_ids"], REF["tiny/attention_mask"]
    err = np.abs(npdistil.load(out)(ids, mask).last_hidden_state - REF["tiny/last_hidden_state"])
    assert err.max() <= 1e-4
    files = {f.name: f.read_bytes() for f in TINY.iterdir() if f.name != "pytorch_model.bin"}
    fake_hub.add_repo("org/tiny", files)
    assert run("convert", "org/tiny", tmp_path / "hub.safetensors").returncode == 0
    assert npdistil.load(tmp_path / "hub.safetensors").source["repo"] == "org/tiny"
    cache = Path(os.environ["NPDISTIL_CACHE"])
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


_ENCODER = ("embeddings.", "encoder.", "transformer.")  # the base model's own tensors


@pytest.mark.parametrize(
    "folder",
    ["tiny", "tiny-mlm", "tiny-seqcls", "tiny-qa", "tiny-tokcls", "tiny-bert", "tiny-bert-seqcls"],
)
def test_info_counts_every_parameter_heads_included(folder):
    p = run("info", FIXTURES / folder)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    # What transformers saved: every parameter once (a tied projector is not saved twice), not
    # buffers (BERT's position_ids); beyond the encoder: task heads and BERT's pooler.
    saved = safetensors.numpy.load_file(FIXTURES / folder / "model.safetensors")
    params = {k.removeprefix("distilbert.").removeprefix("bert."): a for k, a in saved.items()}
    params = {k: a for k, a in params.items() if not k.endswith("position_ids")}
    total = sum(a.size for a in params.values())
    heads = sum(a.size for k, a in params.items() if not k.startswith(_ENCODER))
    print(f"{folder}: {info['parameters']} parameters ({info['head_parameters']} in heads)")
    assert (info["parameters"], info["head_parameters"]) == (total, heads)


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_info_counts_the_same_parameters_in_a_small_weights_file(tmp_path, dtype):
    small = npdistil.convert_folder(FIXTURES / "tiny-mlm", tmp_path / "s.safetensors", dtype=dtype)
    full, p = json.loads(run("info", FIXTURES / "tiny-mlm").stdout), run("info", small)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert (info["parameters"], info["head_parameters"]) == (
        full["parameters"],
        full["head_parameters"],
    )


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("pytorch_model.bin", "a PyTorch checkpoint"),
        ("model.safetensors", "not an npdistil file"),
        ("config.json", "not even a safetensors file"),
    ],
)
def test_info_on_a_file_that_is_not_an_npdistil_file(name, what):
    p = run("info", TINY / name)
    one_line_error(p, 1, f"{TINY / name}: not an npdistil file", what, "npdistil convert")

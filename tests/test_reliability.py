"""Hostile text, many threads, several processes, crashes mid-conversion: defined results."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, checkpoint_copy

import npdistil
from npdistil.errors import InputError, InputTypeError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("cache"))


HARD_TEXTS = {
    "empty": "",
    "whitespace only": " \t\n\u3000 ",
    "NUL and controls": "a\x00b\x07c\x1bd\x7f",
    "BOM and zero-width": "\ufeffzero\u200bwidth\u200d joiner\u2060",
    "emoji": "🙂🚀👩‍👩‍👧 ok",
    "CJK": "東京都で日本語",
    "right-to-left": "مرحبا بالعالم שלום",
    "combining marks": "e\u0301 a\u0308\u0304 Z\u0335\u0321",
    "numbers": "3.14159 1e10 -42",
    "one long word": "x" * 5000,
}


def test_hard_texts_give_defined_output_equal_alone_and_in_a_batch(model):
    texts = list(HARD_TEXTS.values())
    batch = model.encode(texts, batch_size=4)
    assert batch.shape == (len(texts), 20) and np.isfinite(batch).all()
    for i, (name, text) in enumerate(HARD_TEXTS.items()):
        alone = model.encode([text])[0]
        err = np.abs(batch[i] - alone).max()
        assert err <= 1e-5, f"{name}: batch vs alone differ by {err}"
    tokens = model.tokenizer(texts).tokens
    assert tokens[0] == tokens[1] == ["[CLS]", "[SEP]"]  # empty and whitespace-only


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ([], InputError, "empty batch"),
        (["fine", "\ud800"], InputError, "text 1 is not valid Unicode: lone surrogate"),
        (["fine", b"bytes"], InputTypeError, "text 1 is a bytes"),
        ([None], InputTypeError, "text 0 is a NoneType"),
        (["a", "b", 3.5], InputTypeError, "text 2 is a float"),
        (42, InputTypeError, "got int"),
    ],
)
def test_bad_texts_are_named_before_the_tokenizer_sees_them(model, texts, error, message):
    with pytest.raises(error, match=message):
        model.encode(texts)


def test_a_10_mb_text_is_truncated_quickly_or_embedded_in_windows(model):
    text = "word " * 2_000_000
    with pytest.warns(UserWarning, match="truncated"):
        batch = model.tokenizer([text, "short"])
    assert batch.truncated.tolist() == [True, False] and batch.input_ids.shape == (2, 40)
    with pytest.warns(UserWarning, match="truncated"):
        emb = model.encode([text], long_text="truncate")
    assert emb.shape == (1, 20)
    [tokens] = model.encode(["word " * 20_000], output_value="tokens")
    assert len(tokens.tokens) == 40_000  # every piece of a long text, none dropped


def test_100_000_short_texts(model):
    texts = [f"text {i}" for i in range(100_000)]
    emb = model.encode(texts, batch_size=256)
    assert emb.shape == (100_000, 20)
    np.testing.assert_allclose(emb[[0, 77_777]], model.encode([texts[0], texts[77_777]]), atol=1e-5)


def test_eight_threads_sharing_one_model_get_the_sequential_results(model):
    texts = [f"thread text {i} " + "more words " * (i % 11) for i in range(400)]
    expected = model.encode(texts, batch_size=8)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            mine = texts[k::8]
            for _ in range(3):  # "for a while"
                out = model.encode(mine, batch_size=8)
            results[k] = out
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(8):
        np.testing.assert_allclose(results[k], expected[k::8], atol=1e-5)


# ---- files and processes ----------------------------------------------------------------------

_MAP_SCRIPT = textwrap.dedent(
    """
    import sys, time, npdistil
    m = npdistil.load(sys.argv[1])
    m.encode(["touch every weight page"])
    path = str(m.path)
    rss = shared = 0
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif inside and line.startswith("Shared_Clean:"):
                shared += int(line.split()[1])
    print(rss, shared, flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_two_processes_share_the_pages_of_one_converted_file(full_size_folder, tmp_path):
    path = str(npdistil.load(full_size_folder, cache_dir=tmp_path).path)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", _MAP_SCRIPT, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    # The second process starts only once the first has touched its pages and reported, and
    # the first keeps them mapped until told to exit: no race between the two.
    procs = [start()]
    first = procs[0].stdout.readline().split()
    procs.append(start())
    second = procs[1].stdout.readline().split()
    for p in procs:
        p.communicate("\n", timeout=30)
    rss, shared = int(second[0]), int(second[1])
    print(
        f"file-backed RSS {rss} kB, shared with the other process {shared} kB "
        f"(first process: {first})"
    )
    # every weight but most rows of the 89 MB word-embedding table is touched
    assert rss > 150_000 and shared >= 0.9 * rss  # mapped and shared, not copied


def test_reconverting_never_truncates_a_file_another_process_has_mapped(tmp_path):
    folder = checkpoint_copy(FIXTURES / "tiny", tmp_path / "tiny", "model.safetensors")
    out = tmp_path / "shared.safetensors"
    npdistil.convert_folder(folder, out)
    first = npdistil.load(out)
    before = first(np.array([[2, 50, 3]])).last_hidden_state
    inode = out.stat().st_ino
    npdistil.convert_folder(folder, out)  # written beside it and renamed over it
    assert out.stat().st_ino != inode
    np.testing.assert_array_equal(first(np.array([[2, 50, 3]])).last_hidden_state, before)


_CONVERT_SCRIPT = textwrap.dedent(
    """
    import sys, npdistil
    npdistil.convert_folder(sys.argv[1], sys.argv[2])
    """
)


def test_concurrent_conversions_of_one_file_leave_one_whole_file(tmp_path):
    folder = checkpoint_copy(FIXTURES / "tiny", tmp_path / "tiny", "pytorch_model.bin")
    out = tmp_path / "race.safetensors"
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONVERT_SCRIPT, str(folder), str(out)])
        for _ in range(4)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert npdistil.load(out).config.dim == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "npdistil-cache",
        "race.safetensors",
        "tiny",
    ] or "race.safetensors" in [p.name for p in tmp_path.iterdir()]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_conversion_killed_midway_leaves_no_file(tmp_path):
    folder = checkpoint_copy(FIXTURES / "tiny", tmp_path / "tiny", "model.safetensors")
    out = tmp_path / "killed.safetensors"
    script = textwrap.dedent(
        """
        import os, sys, safetensors.numpy, npdistil
        real = safetensors.numpy.save_file
        def dying(tensors, path, metadata=None):
            real(tensors, path, metadata=metadata)
            with open(path, "r+b") as f:
                f.truncate(1000)      # half-written ...
            os._exit(9)               # ... and the process dies before the rename
        safetensors.numpy.save_file = dying
        npdistil.convert_folder(sys.argv[1], sys.argv[2])
        """
    )
    assert subprocess.run([sys.executable, "-c", script, str(folder), str(out)]).returncode == 9
    assert not out.exists()  # only a stray temporary file, never the real name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        npdistil.convert_folder(folder, out)
    assert npdistil.load(out).config.dim == 20

"""Looking inside: npdistil trace, npdistil info --tensors, npdistil attention (text and PNG).

The command-line tests run the installed console script in a subprocess. Figures are checked
against transformers' committed outputs for the same text, and tensor counts against the
checkpoint file itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, tiny_reference
from safetensors.numpy import load_file

import npdistil
from npdistil import inside
from npdistil.errors import InputError, NpdistilError

META, REF = tiny_reference()
TEXT = META["texts"][0]  # "Hello world!", row 0 of the fixture batch
N_TOKENS = int(REF["tiny/attention_mask"][0].sum())
TINY = str(FIXTURES / "tiny")
NPDISTIL = Path(sys.executable).parent / "npdistil"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(NPDISTIL), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def _transformers_stage(name: str) -> np.ndarray:
    """What transformers gave for TEXT at the stages it exposes (padding cut off)."""
    if name == "embeddings":
        return REF["tiny/hidden_states/0"][0, :N_TOKENS]
    layer, what = re.fullmatch(r"layer\.(\d+)\.(.*)", name).groups()
    if what == "output_norm":
        return REF[f"tiny/hidden_states/{int(layer) + 1}"][0, :N_TOKENS]
    assert what == "attention.probs"
    return REF[f"tiny/attentions/{layer}"][0, :, :N_TOKENS, :N_TOKENS]


EXPOSED = ["embeddings"] + [
    f"layer.{i}.{w}" for i in range(3) for w in ("attention.probs", "output_norm")
]


# ---- trace ---------------------------------------------------------------------------------------


def test_trace_statistics_match_transformers_stages():
    stages = {s.name: s for s in inside.trace(npdistil.load(TINY), TEXT)}
    assert len(stages) == 2 + 3 * 10
    for name in EXPOSED:
        expected = _transformers_stage(name).astype(np.float64)
        s = stages[name]
        assert s.shape[-2:] == expected.shape[-2:], name
        got = np.array([s.mean, s.std, s.max_abs])
        want = np.array([expected.mean(), expected.std(), np.abs(expected).max()])
        err = float(np.abs(got - want).max())
        print(f"trace {name}: mean/std/max|x| max abs error {err:.2g}")
        assert err < 2e-5, name


def test_cli_trace_prints_every_stage():
    result = _run("trace", "--model", TINY, TEXT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stage", "shape", "mean", "std", "max", "|x|"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert len(rows) == 2 + 3 * 10
    assert f"[1, 4, {N_TOKENS}, {N_TOKENS}]" in rows["layer.0.attention.scores"]
    for name in EXPOSED:
        *_, mean, std, top = rows[name].split()
        expected = _transformers_stage(name).astype(np.float64)
        want = [expected.mean(), expected.std(), np.abs(expected).max()]
        np.testing.assert_allclose([float(mean), float(std), float(top)], want, atol=1e-4)


# ---- the weight tree -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "tiny-mlm", "tiny-qa"])
def test_weight_tree_counts_every_checkpoint_parameter_once(name):
    checkpoint = load_file(str(FIXTURES / name / "model.safetensors"))
    n_params = sum(a.size for a in checkpoint.values())  # the masked-LM projector is tied: absent
    tree = inside.weight_tree(npdistil.load(FIXTURES / name))
    print(tree.splitlines()[0])
    assert tree.splitlines()[0].startswith(f"{n_params:,} parameters")


def test_cli_info_tensors_prints_the_tree():
    result = _run("info", "--tensors", str(FIXTURES / "tiny-mlm"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    c = npdistil.load(FIXTURES / "tiny-mlm").config
    assert re.search(rf"^    word +\[{c.vocab_size}, {c.dim}\]$", out, re.M)
    assert f"blocks: {c.n_layers} x Block" in out
    assert "qkv" in out and f"weight [{c.dim}, {3 * c.dim}], bias [{3 * c.dim}]" in out
    assert f"ffn_in                     Linear: weight [{c.dim}, {c.hidden_dim}]" in out
    assert f"projector                  Linear: weight [{c.dim}, {c.vocab_size}] (tied: " in out


# ---- attention -----------------------------------------------------------------------------------


def test_attention_map_shades():
    tokens = ["[CLS]", "a", "b", "[SEP]"]
    lines = inside.attention_map(np.eye(4), tokens).splitlines()
    assert lines[0].strip() == "0 1 2 3"
    for i, line in enumerate(lines[1:]):
        cells = line[len(lines[0]) - len("0 1 2 3") :]
        assert cells == " " * (2 * i) + "@", line
    uniform = inside.attention_map(np.full((4, 4), 0.25), tokens).splitlines()
    assert all(line.endswith(": : : :") for line in uniform[1:])
    with pytest.raises(InputError, match="for 3 tokens"):
        inside.attention_map(np.eye(4), tokens[:3])


def test_cli_attention_rows_peak_where_transformers_does():
    result = _run("attention", "--model", TINY, "--layer", "1", TEXT)
    assert result.returncode == 0, result.stderr
    maps = result.stdout.split("\n\n")[:4]
    probs = REF["tiny/attentions/1"][0, :, :N_TOKENS, :N_TOKENS]  # transformers: [H, T, T]
    for h, text in enumerate(maps):
        title, header, *rows = text.splitlines()
        assert title.startswith(f"layer 1, head {h}")
        assert len(rows) == N_TOKENS
        start = len(header) - len(header.lstrip())
        for i, row in enumerate(rows):
            cells = row[start::2].ljust(N_TOKENS)
            darkest = max(cells, key=" .:-=+*#%@".index)
            assert cells[int(np.argmax(probs[h, i]))] == darkest, (h, i, row)


def test_cli_attention_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "att.png"
    result = _run("attention", "--model", TINY, "--layer", "2", "--png", str(png), TEXT)
    assert result.returncode == 0, result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    print(f"attention PNG {width} x {height}, {len(data):,} bytes")
    assert width > 400 and height > 100
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "npdistil-cache") == ["att.png"]


def test_png_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(NpdistilError, match=r"npdistil\[viz\]"):
        inside.attention_png(tmp_path / "a.png", np.eye(2)[None], ["a", "b"])
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize(
    ("option", "message"), [("--layer=3", "layers 0..2"), ("--head=-1", "heads 0..3")]
)
def test_cli_attention_bad_layer_or_head(option, message):
    result = _run("attention", "--model", TINY, option, TEXT)
    assert result.returncode == 1
    assert message in result.stderr

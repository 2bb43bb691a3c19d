"""The shortcut when only each sequence's first token is read (CLS pooling, sequence
classification, multiple choice): the last layer makes keys and values for every token but
runs queries, attention output and feed-forward for the first token only. It must give the
full pass's numbers for that token, up to float32 rounding (the products see fewer rows), in
every way the pass is split between cores: by columns (up to 64 tokens), by rows, by rows
snapped to whole sequences, padded or packed. Parity of its users with transformers is tested
with the heads (test_families.py, test_bert.py, test_tasks.py) and on the real
all-mpnet-base-v2 (test_mpnet_real.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

import npdistil
from npdistil.model import transformer as M

MODELS = ["tiny", "tiny-bert", "tiny-roberta", "tiny-xlmr", "tiny-mpnet"]
# float32 rounding: the last layer's products see fewer rows (BLAS may take another kernel
# path for them). Hidden states are of order 1 after LayerNorm; measured <= 8.3e-7.
ROUNDING = 5e-6


def _sequences(model: npdistil.Model, lengths: list[int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    c = model.config
    return [rng.integers(5, c.vocab_size, n) for n in lengths]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "lengths",
    [
        [7],  # one short sequence: products split by columns
        [3, 9, 9, 20],  # under 64 tokens in all: columns
        [40, 40, 40, 12, 5, 33, 1, 2],  # rows, cut inside a sequence
        [40] * 6,  # rows, cut where a sequence starts
    ],
    ids=["one", "columns", "rows", "whole-sequences"],
)
def test_first_only_equals_the_full_pass_packed(name, lengths):
    model = npdistil.load(FIXTURES / name)
    seqs = _sequences(model, lengths, seed=len(lengths))
    full = model.forward_packed(seqs)
    first = model.forward_packed(seqs, first_only=True)
    assert [f.shape for f in first] == [(1, model.config.dim)] * len(seqs)
    err = max(float(np.abs(f - h[:1]).max()) for f, h in zip(first, full, strict=True))
    print(f"{name} {lengths}: first_only vs full, max abs diff {err:.3g}")
    assert err <= ROUNDING


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 3, 9])
def test_first_only_equals_the_full_pass_padded(name, batch):
    model = npdistil.load(FIXTURES / name)
    rng = np.random.default_rng(batch)
    lengths = rng.integers(1, 41, batch)
    ids = np.full((batch, lengths.max()), model.config.pad_token_id)
    mask = np.zeros_like(ids)
    for row, (seq, n) in enumerate(zip(_sequences(model, list(lengths), 7), lengths, strict=True)):
        ids[row, :n], mask[row, :n] = seq, 1
    full = model(ids, mask).last_hidden_state[:, :1]
    first = M.forward(ids, mask, model.weights, model.config, first_only=True).last_hidden_state
    assert first.shape == (batch, 1, model.config.dim)
    assert np.abs(first - full).max() <= ROUNDING


def test_first_only_refuses_what_it_cannot_give():
    model = npdistil.load(FIXTURES / "tiny")
    ids = np.array([[2, 180, 3]])
    with pytest.raises(ValueError, match="no hidden states"):
        M.forward(ids, np.ones_like(ids), model.weights, model.config, first_only=True,
                  output_hidden_states=True)  # fmt: skip
    with pytest.raises(ValueError, match="a first token in every sequence"):
        model.forward_packed([ids[0], ids[0, :0]], first_only=True)


def test_cls_pooling_of_long_texts_runs_the_first_window_only():
    """With CLS pooling a text of several windows takes its [CLS] from the first window: the
    shortcut runs that window alone and gets the same vector."""
    model = npdistil.load(FIXTURES / "tiny-roberta")
    long_text = " ".join(["A class definition is an executable statement."] * 30)
    runs: list[int] = []
    model.encode([long_text], pooling="cls", on_batch=lambda done, total: runs.append(total))
    assert runs == [1]  # one piece: the first window
    tokens = model.encode(long_text, output_value="token_embeddings")  # every window, stitched
    cls = model.encode(long_text, pooling="cls")
    assert np.abs(cls - tokens[0]).max() <= ROUNDING

"""npdistil.reference (npdistil/model/reference.py), the textbook forward pass: equal to
transformers' committed outputs, and the fast path (model/transformer.py) equal to it.

Both comparisons print their figures into the end-of-run parity table. The reference computes in
float64, so "reference vs fast path" measures the fast path's float32 rounding and its tricks
(fitted GELU, base-2 softmax, fused kernels, batches split between threads).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, TINY_MODELS, tiny_reference

import npdistil
from npdistil.errors import InputError
from npdistil.model import reference
from npdistil.model.transformer import forward, forward_packed

META, REF = tiny_reference()
FULL = np.load(FIXTURES / "full_size_reference.npz")
FULL_META = json.loads((FIXTURES / "full_size_reference.json").read_text())

# The fast path against the float64 reference: float32 rounding and the fast path's tricks.
# Half the 1e-4 allowed against transformers, so that a trick that drifts shows up here first.
# Float32 rounding alone reaches ~1.3e-5 on tiny-tokcls (transformers against the reference):
# its random weights amplify rounding the most; the fast path measured up to 1.75e-5 there.
FAST_TOLERANCE = 5e-5


@pytest.fixture(scope="module")
def full_size(full_size_folder, tmp_path_factory):
    return npdistil.load(full_size_folder, cache_dir=tmp_path_factory.mktemp("cache"))


# ---- the reference against transformers ----------------------------------------------------------


def _compare(label, parity, out, last, hidden, attentions):
    """One figure each for the last hidden state, all hidden states and all attentions."""
    errors = [parity(f"{label} last_hidden_state", out.last_hidden_state, last)]
    errors.append(parity(f"{label} hidden_states (all)", np.stack(out.hidden_states), hidden))
    errors.append(parity(f"{label} attentions (all)", np.stack(out.attentions), attentions))
    return max(errors)


def _tiny_expected(name):
    n = META["models"][name]["config"]["n_layers"]
    hidden = np.stack([REF[f"{name}/hidden_states/{i}"] for i in range(n + 1)])
    attentions = np.stack([REF[f"{name}/attentions/{i}"] for i in range(n)])
    return REF[f"{name}/last_hidden_state"], hidden, attentions


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_reference_matches_transformers(name, parity):
    model = npdistil.load(FIXTURES / name)
    ids, mask = REF[f"{name}/input_ids"], REF[f"{name}/attention_mask"]
    assert (mask == 0).any(), "the fixture batch is padded"
    out = reference.forward(model, ids, mask)
    assert out.last_hidden_state.dtype == np.float64
    assert len(out.hidden_states) == model.config.n_layers + 1
    _compare(f"reference {name}", parity, out, *_tiny_expected(name))


def test_full_size_reference_matches_transformers(full_size, parity):
    out = reference.forward(full_size, FULL["batch/input_ids"], FULL["batch/attention_mask"])
    positions = FULL["batch/hidden_states_positions"]
    seq, layers = int(FULL["batch/attentions_sequence"]), FULL["batch/attentions_layers"]
    picked = out._replace(  # the rows and layers the fixture keeps
        hidden_states=tuple(h[:, positions] for h in out.hidden_states),
        attentions=tuple(out.attentions[i][seq] for i in layers),
    )
    _compare(
        "reference full-size batch",
        parity,
        picked,
        FULL["batch/last_hidden_state"],
        np.stack([FULL[f"batch/hidden_states/{i}"] for i in range(7)]),
        np.stack([FULL[f"batch/attentions/{i}"] for i in layers]),
    )


def test_full_size_reference_512_tokens_matches_transformers(full_size, parity):
    out = reference.forward(full_size, FULL["long/input_ids"], FULL["long/attention_mask"])
    assert out.last_hidden_state.shape == (1, 512, 768)
    parity(
        "reference full-size 512 tokens",
        out.last_hidden_state[:, FULL["long/positions"]],
        FULL["long/last_hidden_state"],
    )


# ---- the fast path against the reference ---------------------------------------------------------


def _fast_equals_reference(label, model, ids, mask, parity):
    fast = model(ids, mask, output_hidden_states=True, output_attentions=True)
    ref = reference.forward(model, ids, mask)
    error = _compare(
        f"fast vs reference {label}",
        parity,
        fast,
        ref.last_hidden_state,
        np.stack(ref.hidden_states),
        np.stack(ref.attentions),
    )
    assert error <= FAST_TOLERANCE


@pytest.mark.parametrize("name", TINY_MODELS)
def test_fast_path_equals_reference_tiny(name, parity):
    model = npdistil.load(FIXTURES / name)
    ids, mask = REF[f"{name}/input_ids"], REF[f"{name}/attention_mask"]
    _fast_equals_reference(name, model, ids, mask, parity)


def test_fast_path_equals_reference_full_size(full_size, parity):
    ids, mask = FULL["batch/input_ids"], FULL["batch/attention_mask"]
    _fast_equals_reference("full-size batch", full_size, ids, mask, parity)


def test_fast_path_equals_reference_on_odd_batches(parity):
    """Lengths 1 to T, a row with no real token at all, a batch big enough to be split."""
    model = npdistil.load(FIXTURES / "tiny")
    rng = np.random.default_rng(11)
    ids = rng.integers(5, model.config.vocab_size, size=(9, 23))
    lengths = np.array([23, 1, 0, 7, 22, 2, 15, 23, 11])
    mask = (np.arange(23)[None, :] < lengths[:, None]).astype(np.int64)
    _fast_equals_reference("odd batch", model, ids, mask, parity)
    # The row with every key masked attends uniformly, as transformers does (the dtype's
    # minimum, not -inf, so no NaN).
    probs = reference.forward(model, ids, mask).attentions[0][2]
    np.testing.assert_allclose(probs, 1 / 23, rtol=1e-12)


def test_packed_fast_path_equals_reference_per_sequence(parity):
    """forward_packed (sequences back to back, no padding, runs of equal length, split between
    threads) against the reference run on each sequence alone."""
    model = npdistil.load(FIXTURES / "tiny")
    rng = np.random.default_rng(5)
    lengths = [3, 17, 3, 40, 1, 17, 9, 3, 25, 2]
    sequences = [rng.integers(5, model.config.vocab_size, size=n) for n in lengths]
    packed = forward_packed(sequences, model.weights, model.config)
    expected = [reference.forward(model, s).last_hidden_state[0] for s in sequences]
    error = parity(
        "fast vs reference packed sequences",
        np.concatenate(packed),
        np.concatenate(expected),
    )
    assert error <= FAST_TOLERANCE


def test_float32_reference_is_float32_and_close(parity):
    model = npdistil.load(FIXTURES / "tiny")
    ids, mask = REF["tiny/input_ids"], REF["tiny/attention_mask"]
    out = reference.forward(model, ids, mask, dtype=np.float32)
    assert out.last_hidden_state.dtype == np.float32
    assert all(a.dtype == np.float32 for a in out.attentions)
    parity("reference float32 tiny", out.last_hidden_state, REF["tiny/last_hidden_state"])


# ---- the pieces ----------------------------------------------------------------------------------


def test_gelu_is_the_exact_erf_form():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    # Phi from the standard normal's values, printed in every table of the normal distribution.
    phi = np.array(
        [0.0013498980316301, 0.1586552539314571, 0.5, 0.6914624612740131, 0.9772498680518208]
    )
    np.testing.assert_allclose(reference.gelu(x), x * phi, rtol=1e-13, atol=1e-16)


def test_softmax_subtracts_the_max():
    x = np.array([[1000.0, 1000.0, -np.inf], [0.0, np.log(3.0), -1e308]])
    np.testing.assert_allclose(reference.softmax(x), [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])


def test_heads_split_and_merge_back():
    x = np.arange(2 * 3 * 20, dtype=np.float64).reshape(2, 3, 20)
    heads = reference.split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(heads[1, 2, 0], x[1, 0, 10:15])  # head 2 = features 10..14
    np.testing.assert_array_equal(reference.merge_heads(heads), x)


def test_trace_sees_every_stage_in_order():
    model = npdistil.load(FIXTURES / "tiny")
    ids, mask = REF["tiny/input_ids"][:2], REF["tiny/attention_mask"][:2]
    seen: list[tuple[str, np.ndarray]] = []
    out = reference.forward(model, ids, mask, trace=lambda n, x: seen.append((n, x)))
    names = [n for n, _ in seen]
    per_layer = ["q", "k", "v", "scores", "probs", "output"]
    expected = ["embeddings.sum", "embeddings"]
    for i in range(model.config.n_layers):
        expected += [f"layer.{i}.attention.{n}" for n in per_layer]
        expected += [f"layer.{i}.attention_norm", f"layer.{i}.ffn.hidden", f"layer.{i}.ffn.output"]
        expected += [f"layer.{i}.output_norm"]
    assert names == expected
    traced = dict(seen)
    b, t = ids.shape
    c = model.config
    assert traced["layer.0.attention.q"].shape == (b, c.n_heads, t, c.head_dim)
    assert traced["layer.1.ffn.hidden"].shape == (b, t, c.hidden_dim)
    for i in range(c.n_layers):
        assert traced[f"layer.{i}.output_norm"] is out.hidden_states[i + 1]
        assert traced[f"layer.{i}.attention.probs"] is out.attentions[i]


# ---- BERT's token types --------------------------------------------------------------------------


def test_token_types_are_added_before_the_layer_norm():
    """A token-type table adds row ``type`` to each token: the same as folding that row into the
    position table (how all-MiniLM-L6-v2 was first run on npdistil's forward)."""
    model = npdistil.load(FIXTURES / "tiny")
    emb, config = model.weights.embeddings, model.config
    types_table = np.random.default_rng(3).standard_normal((2, config.dim)).astype(np.float32)
    bert = emb._replace(token_type=types_table)
    ids = REF["tiny/input_ids"][:2]

    folded = emb._replace(position=emb.position.astype(np.float64) + types_table[1])
    types = np.ones_like(ids)
    np.testing.assert_allclose(
        reference.embed(ids, bert, config, types), reference.embed(ids, folded, config), atol=1e-12
    )
    zero = emb._replace(position=emb.position.astype(np.float64) + types_table[0])
    np.testing.assert_allclose(  # no token_type_ids: all type 0, as transformers
        reference.embed(ids, bert, config), reference.embed(ids, zero, config), atol=1e-12
    )


def test_distilbert_refuses_token_types():
    model = npdistil.load(FIXTURES / "tiny")
    ids = REF["tiny/input_ids"][:1]
    zeros = np.zeros_like(ids)
    np.testing.assert_array_equal(  # all zeros is what DistilBERT means anyway
        reference.forward(model, ids, token_type_ids=zeros).last_hidden_state,
        reference.forward(model, ids).last_hidden_state,
    )
    with pytest.raises(InputError, match="token_type_ids"):
        reference.forward(model, ids, token_type_ids=zeros + 1)


def test_fast_path_equals_reference_with_token_types(parity):
    """A BERT-style token-type table, sentence pairs with types 0 and 1, padded."""
    model = npdistil.load(FIXTURES / "tiny")
    table = np.random.default_rng(9).standard_normal((2, model.config.dim)).astype(np.float32)
    weights = model.weights._replace(embeddings=model.weights.embeddings._replace(token_type=table))
    ids, mask = REF["tiny/input_ids"], REF["tiny/attention_mask"]
    types = (np.arange(ids.shape[1])[None, :] >= mask.sum(1, keepdims=True) // 2).astype(np.int64)
    fast = forward(ids, mask, weights, model.config, token_type_ids=types)
    ref = reference.encoder(ids, mask, weights, model.config, token_type_ids=types)
    plain = reference.encoder(ids, mask, model.weights, model.config)
    assert np.abs(ref.last_hidden_state - plain.last_hidden_state).max() > 0.1  # types matter
    error = parity("fast vs reference token types", fast.last_hidden_state, ref.last_hidden_state)
    assert error <= FAST_TOLERANCE

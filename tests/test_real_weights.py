"""Real trained weights: sentence-transformers/all-MiniLM-L6-v2 (a BERT: 6 layers, 384 wide),
against transformers' BertModel and SentenceTransformer.encode (minilm_reference.npz, made by
scripts/make_reference_bert.py from the same installed folder).

Real models have what random weights never produce: outlier features (a LayerNorm input of
224 on [CLS] in layer 0), attention scores of 72, long texts, pairs. Limits: 1e-4 on hidden
states, 2e-5 on sentence embeddings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, SENTENCE_TOLERANCE

import npdistil
from npdistil.text.vectors import quantize_embeddings

META = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
REF = dict(np.load(FIXTURES / "minilm_reference.npz"))
TEXTS = META["texts"]


@pytest.fixture(scope="module")
def minilm(minilm_folder, tmp_path_factory):
    return npdistil.load(minilm_folder, cache_dir=tmp_path_factory.mktemp("cache"))


def test_it_is_read_as_the_sentence_transformers_model_it_is(minilm):
    c = minilm.config
    assert (c.model_type, c.dim, c.n_layers, c.n_heads, c.vocab_size) == ("bert", 384, 6, 12, 30522)
    modules = minilm.sentence_modules
    assert [type(m).__name__ for m in modules.modules] == ["Pooling", "Normalize"]
    assert modules.pooling.modes == ("mean",) and minilm.max_seq_length == 256
    assert minilm.get_sentence_embedding_dimension() == 384


def test_hidden_states_pooler_and_attentions_match_bert_model(minilm, parity):
    ids, mask = REF["batch/input_ids"], REF["batch/attention_mask"]
    assert ids.shape == (10, 512)
    out = minilm(ids, mask, output_hidden_states=True, output_attentions=True)
    positions = REF["batch/hidden_positions"]
    got, want = out.last_hidden_state[:, positions], REF["batch/last_hidden_state"]
    real = mask[:, positions].astype(bool)  # [10, P]: a text's own tokens, not padding
    parity("all-MiniLM-L6-v2 last_hidden_state (10 texts)", got[real], want[real])
    # Padding rows are computed too (as transformers does) but mean nothing; positions like 511
    # the model hardly saw in training make them the least well-conditioned rows.
    parity("all-MiniLM-L6-v2 last_hidden_state at padding", got[~real], want[~real])
    parity("all-MiniLM-L6-v2 pooler_output", out.pooler_output, REF["batch/pooler_output"])
    lengths = mask.sum(1)
    for i, h in enumerate(out.hidden_states):
        rows = np.stack(
            [h[t, [0, 1, lengths[t] - 1]] for t in REF["batch/layer_texts"]]
        )  # the CJK and the 300-token text, at [CLS], the first word and [SEP]
        parity(f"all-MiniLM-L6-v2 hidden_states[{i}]", rows, REF[f"batch/hidden_states/{i}"])
    n = lengths[0]
    parity(
        "all-MiniLM-L6-v2 attentions[0] (text 0)",
        out.attentions[0][0, :, :n, :n],
        REF["batch/attentions/0"],
    )


def test_tokenizer_gives_the_ids_transformers_gives(minilm):
    with pytest.warns(UserWarning, match="1 text"):  # the 600-word one, beyond 512
        batch = minilm.tokenizer(TEXTS)
    ids = REF["batch/input_ids"]
    np.testing.assert_array_equal(batch.input_ids, ids)
    np.testing.assert_array_equal(batch.attention_mask, REF["batch/attention_mask"])
    assert batch.truncated.tolist() == [False] * 9 + [True]


def test_sentence_pairs_with_token_type_ids_match_bert_model(minilm, parity):
    firsts, seconds = zip(*META["pairs"], strict=True)
    with pytest.warns(UserWarning, match="1 pair"):
        batch = minilm.tokenizer(list(firsts), list(seconds), max_length=META["pair_max_length"])
    np.testing.assert_array_equal(batch.input_ids, REF["pairs/input_ids"])
    np.testing.assert_array_equal(batch.token_type_ids, REF["pairs/token_type_ids"])
    np.testing.assert_array_equal(batch.attention_mask, REF["pairs/attention_mask"])
    out = minilm(batch.input_ids, batch.attention_mask, token_type_ids=batch.token_type_ids)
    positions = REF["pairs/positions"]
    rows = np.stack([out.last_hidden_state[b, positions[b]] for b in range(len(positions))])
    parity("all-MiniLM-L6-v2 pairs last_hidden_state", rows, REF["pairs/last_hidden_state"])
    parity("all-MiniLM-L6-v2 pairs pooler_output", out.pooler_output, REF["pairs/pooler_output"])


def test_encode_is_sentence_transformers_encode(minilm, parity):
    got = minilm.encode(TEXTS)
    parity(
        "all-MiniLM-L6-v2 encode() vs SentenceTransformer",
        got,
        REF["st/default"],
        SENTENCE_TOLERANCE,
    )
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)  # its Normalize
    one = minilm.encode(TEXTS[3])
    parity("all-MiniLM-L6-v2 encode(one text)", one, REF["st/single"], SENTENCE_TOLERANCE)
    for i in (0, 5):
        [tokens] = minilm.encode([TEXTS[i]], output_value="token_embeddings")
        parity(
            f"all-MiniLM-L6-v2 token_embeddings text {i}",
            tokens,
            REF[f"st/token_embeddings/{i}"],
        )
    parity("all-MiniLM-L6-v2 similarity", minilm.similarity(got, got), REF["st/similarity"])


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantized_embeddings(minilm, precision):
    expected = REF[f"st/precision/{precision}"]
    with pytest.warns(UserWarning, match="only 10") if "int8" in precision else _nothing():
        exact = quantize_embeddings(REF["st/default"], precision)
    np.testing.assert_array_equal(exact, expected)
    with pytest.warns(UserWarning, match="only 10") if "int8" in precision else _nothing():
        got = minilm.encode(TEXTS, precision=precision)
    steps = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    print(f"all-MiniLM-L6-v2 {precision}: {np.count_nonzero(steps)} of {steps.size} one step off")
    assert steps.max() <= 1
    assert np.count_nonzero(steps) <= (2 * 384 if "int8" in precision else 0) + steps.size // 200


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_semantic_search_finds_the_paraphrase(minilm):
    corpus = [TEXTS[1], TEXTS[2], TEXTS[4], TEXTS[6]]
    scores = minilm.similarity(minilm.encode(TEXTS[0]), minilm.encode(corpus))
    assert scores.shape == (1, 4) and scores.argmax() == 0  # "eating food" ~ "eating bread"

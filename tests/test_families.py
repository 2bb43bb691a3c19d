"""RoBERTa, XLM-RoBERTa, CamemBERT and MPNet: config mapping, tensor names, offset positions,
MPNet's relative position bias, the families' heads, tokenizers (byte-level BPE, Unigram,
WordPiece with ``<s>``/``</s>``) and text pairs, against transformers' own outputs
(families_reference.npz and families_pipelines.json, made by scripts/make_reference_families.py).

The tiny models have odd sizes (hidden 20, 4 heads of 5, FFN 37, 3 layers, 42 positions of which
40 usable) and large redrawn weights, so a position off by one, a missing bias term or a swapped
head shows.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import FIXTURES, SENTENCE_TOLERANCE, checkpoint_copy

import npdistil
from npdistil import EncoderConfig
from npdistil.errors import ConfigError
from npdistil.model import reference
from npdistil.model.positions import position_ids, relative_buckets

META = json.loads((FIXTURES / "families_reference.json").read_text(encoding="utf-8"))
PIPELINES = json.loads((FIXTURES / "families_pipelines.json").read_text(encoding="utf-8"))
REF = dict(np.load(FIXTURES / "families_reference.npz"))
MODELS = list(META["models"])
FAMILY = {
    "roberta": ("RoBERTa", "roberta"),
    "xlmr": ("XLM-RoBERTa", "xlm-roberta"),
    "camembert": ("CamemBERT", "camembert"),
    "mpnet": ("MPNet", "mpnet"),
}


def _family(folder: str) -> tuple[str, str]:
    return FAMILY[folder.split("-")[1]]


def _formats(name: str) -> list[str]:
    return [f for f in ("model.safetensors", "pytorch_model.bin") if (FIXTURES / name / f).exists()]


def _ref(name: str, kind: str) -> dict[str, np.ndarray]:
    prefix = f"{name}/{kind}/"
    return {k[len(prefix) :]: v for k, v in REF.items() if k.startswith(prefix)}


CASES = [(n, f) for n in MODELS if not n.endswith("-mc") for f in _formats(n)]


# ---- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-xlmr", "tiny-camembert", "tiny-mpnet"])
def test_family_configs_map_onto_the_fields_and_back(name):
    config = EncoderConfig.from_json_file(FIXTURES / name / "config.json")
    family, model_type = _family(name)
    assert (config.family, config.model_type) == (family, model_type)
    assert (config.dim, config.n_heads, config.n_layers, config.hidden_dim) == (20, 4, 3, 37)
    assert config.layer_norm_eps == 1e-5 and config.pad_token_id == 1
    # 42 rows of the position table, the first two skipped: 40 tokens fit
    assert (config.max_position_embeddings, config.position_offset, config.max_tokens) == (
        42,
        2,
        40,
    )
    if model_type == "mpnet":
        assert (config.type_vocab_size, config.relative_attention_num_buckets) == (0, 32)
    else:
        assert (config.type_vocab_size, config.relative_attention_num_buckets) == (1, 0)
    assert EncoderConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("name", "field", "value", "message"),
    [
        ("tiny-roberta", "position_embedding_type", "relative_key", "position_embedding_type"),
        ("tiny-roberta", "is_decoder", True, "is_decoder True is not supported"),
        ("tiny-roberta", "relative_attention_num_buckets", 32, "an MPNet field"),
        ("tiny-mpnet", "relative_attention_num_buckets", 16, "transformers computes 32"),
        ("tiny-mpnet", "type_vocab_size", 2, "MPNet has no token-type embeddings"),
        ("tiny-roberta", "max_position_embeddings", 2, "leaves no position for a token"),
    ],
)
def test_family_configs_npdistil_cannot_run_are_refused_naming_the_field(
    tmp_path, name, field, value, message
):
    folder = checkpoint_copy(FIXTURES / name, tmp_path / "m", "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match=message):
        npdistil.load(folder)


def test_unknown_model_types_are_refused_naming_the_families():
    with pytest.raises(ConfigError, match="model_type is 'deberta'; npdistil runs .*MPNet"):
        EncoderConfig.from_dict({"model_type": "deberta"})


# ---- positions and MPNet's buckets ---------------------------------------------------------------


def test_mpnet_buckets_equal_transformers_for_every_distance():
    distance, bucket = REF["mpnet/relative_distance"], REF["mpnet/relative_bucket"]  # key - query
    table = relative_buckets(301, 32)  # [query, key] for distances -300..300
    ours = np.array([table[max(0, -d), max(0, d)] for d in distance])
    assert np.array_equal(ours, bucket)
    assert set(bucket.tolist()) == set(range(32)) - {16}  # all (16 would be a distance of -0)


def test_positions_count_from_the_padding_index_and_pads_take_it():
    config = npdistil.load(FIXTURES / "tiny-roberta").config
    ids = REF["tiny-roberta/single/input_ids"]
    positions = position_ids(ids, config)
    mask = REF["tiny-roberta/single/attention_mask"].astype(bool)
    assert (positions[~mask] == 1).all()  # padding: row padding_idx
    lengths = mask.sum(1)
    for row, n in zip(positions, lengths, strict=True):
        assert row[:n].tolist() == list(range(2, n + 2))
    assert positions.max() == config.max_position_embeddings - 1  # the truncated text: last row


# ---- the encoder, the pooler and the heads against transformers ---------------------------------


@pytest.mark.parametrize(("name", "weights"), CASES, ids=[f"{n}-{w}" for n, w in CASES])
@pytest.mark.parametrize("kind", ["single", "pairs"])
def test_tiny_family_models_match_transformers(name, weights, kind, tmp_path, parity):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor of the checkpoint is used
        model = npdistil.load(checkpoint_copy(FIXTURES / name, tmp_path / name, weights))
    ref = _ref(name, kind)
    ids, mask = ref["input_ids"], ref["attention_mask"]
    assert not mask.all()  # padded
    tag = f"{_family(name)[0]} {name} ({weights}) {kind}"
    out = model(ids, mask, output_hidden_states=True, output_attentions=True)
    parity(f"{tag} last_hidden_state", out.last_hidden_state, ref["last_hidden_state"])
    if "hidden_states/0" in ref:
        for i, h in enumerate(out.hidden_states):
            parity(f"{tag} hidden_states[{i}]", h, ref[f"hidden_states/{i}"])
        for i in range(model.config.n_layers):
            parity(f"{tag} attentions[{i}]", out.attentions[i][1], ref[f"attentions/{i}"])
    if "pooler_output" in ref:
        parity(f"{tag} pooler_output", out.pooler_output, ref["pooler_output"])
    if name.endswith("-mlm"):
        logits = model.masked_lm(ids, mask)[:, META["mlm_positions"]]
        parity(f"{tag} MLM logits", logits, ref["logits"])
    if name.endswith("-seqcls"):
        parity(f"{tag} sequence logits", model.sequence_classification(ids, mask), ref["logits"])
    if name.endswith("-tokcls"):
        parity(f"{tag} token logits", model.token_classification(ids, mask), ref["logits"])
    if name.endswith("-qa"):
        start, end = model.question_answering(ids, mask)
        parity(f"{tag} QA start logits", start, ref["start_logits"])
        parity(f"{tag} QA end logits", end, ref["end_logits"])


@pytest.mark.parametrize("name", [n for n in MODELS if not n.endswith("-mc")])
@pytest.mark.parametrize("kind", ["single", "pairs"])
def test_the_tokenizer_gives_transformers_ids_and_offsets(name, kind):
    tok = npdistil.load(FIXTURES / name).tokenizer
    ref = _ref(name, kind)
    if kind == "single":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long text is truncated, as there
            batch = tok(META["texts"])
    else:
        pairs = META["pairs"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = tok([a for a, _ in pairs], [b for _, b in pairs])
    assert batch.token_type_ids is None  # one token type (RoBERTa) or none (MPNet): all 0
    np.testing.assert_array_equal(batch.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, ref["attention_mask"])
    real = ref["attention_mask"].astype(bool)
    # transformers gives (0, 0) to special tokens; so does npdistil
    np.testing.assert_array_equal(batch.offsets[real], ref["offsets"][real])


@pytest.mark.parametrize("name", [n for n in MODELS if n.endswith("-mc")])
def test_multiple_choice_matches_transformers(name, parity):
    model = npdistil.load(FIXTURES / name)
    assert model.task_heads == ("multiple_choice",)
    mc = META["mc"]
    scores = model.multiple_choice(mc["prompt"], mc["choices"])
    batch = model.tokenizer([mc["prompt"]] * len(mc["choices"]), mc["choices"])
    np.testing.assert_array_equal(batch.input_ids, REF[f"{name}/mc/input_ids"])
    logits = REF[f"{name}/mc/logits"][0]
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    got = np.array([s["score"] for s in sorted(scores, key=lambda s: s["index"])])
    parity(f"{name} multiple_choice scores", got, expected, 1e-5)


def test_heads_are_found_by_their_family_names():
    heads = {name: npdistil.load(FIXTURES / name).task_heads for name in MODELS}
    for name, found in heads.items():
        kind = name.split("-", 2)[2] if name.count("-") == 2 else ""
        expected = {
            "": (),
            "mlm": ("masked_lm",),
            "seqcls": ("sequence_classification",),
            "tokcls": ("token_classification",),
            "qa": ("question_answering",),
            "mc": ("multiple_choice",),
        }[kind]
        assert found == expected, name
    seqcls = npdistil.load(FIXTURES / "tiny-roberta-seqcls").heads.sequence_classification
    assert seqcls.activation == "tanh"  # classifier.dense -> tanh -> classifier.out_proj
    mlm = npdistil.load(FIXTURES / "tiny-mpnet-mlm")
    assert mlm.heads.masked_lm.activation == "gelu"
    assert np.shares_memory(mlm.heads.masked_lm.projector.weight, mlm.weights.embeddings.word)


def test_the_relative_bias_matters():
    """MPNet without its bias term is far from transformers: the reference is not passed by
    accident."""
    model = npdistil.load(FIXTURES / "tiny-mpnet")
    ref = _ref("tiny-mpnet", "single")
    weights = model.weights._replace(relative_attention_bias=None)
    out = reference.encoder(ref["input_ids"], ref["attention_mask"], weights, model.config)
    wrong = np.abs(out.last_hidden_state - ref["last_hidden_state"]).max()
    print(f"MPNet without its relative bias: max abs error {wrong:.3g}")
    assert wrong > 0.1


# ---- the textbook and the fast pass -------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-xlmr", "tiny-mpnet"])
def test_reference_matches_transformers_and_the_fast_pass(name, parity):
    model = npdistil.load(FIXTURES / name)
    ref = _ref(name, "pairs")
    ids, mask = ref["input_ids"], ref["attention_mask"]
    textbook = reference.forward(model, ids, mask)
    parity(
        f"reference.py {name} vs transformers", textbook.last_hidden_state, ref["last_hidden_state"]
    )
    fast = model(ids, mask).last_hidden_state
    parity(f"fast vs reference.py {name}", fast, textbook.last_hidden_state.astype(np.float32))


@pytest.mark.parametrize("name", ["tiny-roberta", "tiny-mpnet"])
def test_packed_sequences_each_count_from_zero(name, parity):
    """forward_packed runs every sequence as if alone: positions and MPNet's bias start at 0
    for each, whatever precedes it (against the textbook on each sequence alone, within
    test_reference.py's FAST_TOLERANCE: float32 rounding and the fast path's tricks)."""
    model = npdistil.load(FIXTURES / name)
    ref = _ref(name, "single")
    seqs = [row[:n] for row, n in zip(ref["input_ids"], ref["attention_mask"].sum(1), strict=True)]
    packed = model.forward_packed(seqs)
    alone = [reference.forward(model, s).last_hidden_state[0] for s in seqs]
    err = parity(
        f"{name} packed vs reference.py alone", np.concatenate(packed), np.concatenate(alone)
    )
    assert err <= 5e-5


# ---- pipelines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PIPELINES["fill_mask"]))
def test_fill_mask_equals_the_pipeline(name, parity):
    model = npdistil.load(FIXTURES / name)
    run = PIPELINES["fill_mask"][name]
    for text, expected in zip(run["texts"], run["results"], strict=True):
        got = model.fill_mask(text, top_k=run["top_k"])
        flat_got = got if isinstance(got[0], dict) else [d for per in got for d in per]
        flat_want = expected if isinstance(expected[0], dict) else [d for p in expected for d in p]
        assert [d["token"] for d in flat_got] == [d["token"] for d in flat_want]
        assert [d["token_str"] for d in flat_got] == [d["token_str"] for d in flat_want]
        assert [d["sequence"] for d in flat_got] == [d["sequence"] for d in flat_want]
        parity(
            f"{name} fill-mask scores {text[:20]!r}",
            np.array([d["score"] for d in flat_got]),
            np.array([d["score"] for d in flat_want]),
            1e-5,
        )


@pytest.mark.parametrize("name", list(PIPELINES["classify"]))
def test_classify_equals_the_pipeline(name, parity):
    model = npdistil.load(FIXTURES / name)
    run = PIPELINES["classify"][name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text and pair are truncated, as there
        single = model.classify(run["texts"], top_k=None)
        pairs = model.classify(
            [a for a, _ in META["pairs"]], [b for _, b in META["pairs"]], top_k=None
        )
    for what, got, want in (("single", single, run["single"]), ("pairs", pairs, run["pairs"])):
        for g, w in zip(got, want, strict=True):
            assert [d["label"] for d in g] == [d["label"] for d in w]
            parity(
                f"{name} classify {what}",
                np.array([d["score"] for d in g]),
                np.array([d["score"] for d in w]),
                1e-5,
            )


# ---- sentence-transformers folders --------------------------------------------------------------


@pytest.mark.parametrize("name", list(META["st_folders"]))
def test_sentence_transformers_folders_match_encode(name, parity):
    model = npdistil.load(FIXTURES / name)
    assert model.max_seq_length == META["st_folders"][name]["max_seq_length"] == 40
    texts = META["st_texts"]
    parity(f"{name} encode", model.encode(texts), REF[f"{name}/default"], SENTENCE_TOLERANCE)
    tokens = model.encode(texts[:2], output_value="token_embeddings")
    for i, t in enumerate(tokens):
        parity(f"{name} token_embeddings[{i}]", t, REF[f"{name}/token_embeddings/{i}"])


@pytest.mark.parametrize("name", list(PIPELINES["entities"]))
def test_entities_equal_the_pipeline(name, parity):
    """Byte-level BPE (RoBERTa) and WordPiece with <s> (MPNet): words, groups and offsets as
    the token-classification pipeline makes them."""
    model = npdistil.load(FIXTURES / name)
    case = PIPELINES["entities"][name]
    found = 0
    for strategy, expected in case["runs"].items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a text over 40 tokens is truncated, as there
            got = model.entities(case["texts"], aggregation_strategy=strategy, ignore_labels=[])
        for g, e in zip(got, expected, strict=True):
            assert [{k: v for k, v in d.items() if k != "score"} for d in g] == [
                {k: v for k, v in d.items() if k != "score"} for d in e
            ], f"{name} {strategy}"
            if e:
                found += len(e)
                scores = np.array([d["score"] for d in g])
                parity(
                    f"{name} entities {strategy}", scores, np.array([d["score"] for d in e]), 5e-5
                )
    assert found  # the pipeline found entities to compare

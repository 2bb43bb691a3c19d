"""The BERT family: config mapping, tensor names, token types, the pooler, BERT's heads and
text pairs, against transformers' own outputs (tiny_bert_reference.npz, made by
scripts/make_reference_bert.py).

The tiny BERTs have odd sizes (hidden 20, 4 heads of 5, FFN 37, 3 layers, 40 positions) and
large redrawn weights, so a wrong transpose, a missing token-type term or a swapped head shows.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import FIXTURES, checkpoint_copy

import npdistil
from npdistil import EncoderConfig
from npdistil.errors import CheckpointError, ConfigError, InputError, InputTypeError
from npdistil.text.tokenizer import longest_first

META = json.loads((FIXTURES / "tiny_bert_reference.json").read_text(encoding="utf-8"))
REF = dict(np.load(FIXTURES / "tiny_bert_reference.npz"))
TINY_BERTS = list(META["models"])


def _formats(name: str) -> list[str]:
    return [f for f in ("model.safetensors", "pytorch_model.bin") if (FIXTURES / name / f).exists()]


CASES = [(name, fmt) for name in TINY_BERTS for fmt in _formats(name)]


# ---- config ------------------------------------------------------------------------------------


def test_bert_config_names_map_onto_the_fields_and_back():
    hf = json.loads((FIXTURES / "tiny-bert" / "config.json").read_text())
    config = EncoderConfig.from_dict(hf)
    assert (config.model_type, config.dim, config.n_heads, config.n_layers) == ("bert", 20, 4, 3)
    assert (config.hidden_dim, config.type_vocab_size, config.activation) == (37, 2, "gelu")
    assert config.max_position_embeddings == 40 and config.layer_norm_eps == hf["layer_norm_eps"]
    again = config.to_dict()
    assert again["hidden_size"] == 20 and again["num_attention_heads"] == 4
    assert EncoderConfig.from_dict(again) == config
    distil = EncoderConfig.from_dict(json.loads((FIXTURES / "tiny" / "config.json").read_text()))
    assert distil.type_vocab_size == 0 and EncoderConfig.from_dict(distil.to_dict()) == distil
    assert npdistil.DistilBertConfig is EncoderConfig  # the old name still works


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("position_embedding_type", "relative_key", "position_embedding_type 'relative_key'"),
        ("hidden_act", "gelu_new", "hidden_act 'gelu_new' is not supported"),
        ("is_decoder", True, "is_decoder True is not supported"),
        ("type_vocab_size", -1, "'type_vocab_size' must be a non-negative integer"),
        ("hidden_size", 21, "dim 21 is not divisible by n_heads 4"),
        ("layer_norm_eps", 0, "'layer_norm_eps' must be in"),
    ],
)
def test_bert_configs_npdistil_cannot_run_are_refused_naming_the_field(
    tmp_path, field, value, message
):
    folder = checkpoint_copy(FIXTURES / "tiny-bert", tmp_path / "m", "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match=message):
        npdistil.load(folder)


# ---- the encoder, the pooler and the heads against transformers ---------------------------------


@pytest.mark.parametrize(("name", "weights"), CASES, ids=[f"{n}-{w}" for n, w in CASES])
@pytest.mark.parametrize("kind", ["single", "pairs"])
def test_tiny_berts_match_transformers(name, weights, kind, tmp_path, parity):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor of the checkpoint is used
        model = npdistil.load(checkpoint_copy(FIXTURES / name, tmp_path / name, weights))
    ref = {k.split("/", 2)[2]: v for k, v in REF.items() if k.startswith(f"{name}/{kind}/")}
    ids, mask, types = ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]
    assert types.any() == (kind == "pairs")
    tag = f"BERT {name} ({weights}) {kind}"
    out = model(ids, mask, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    parity(f"{tag} last_hidden_state", out.last_hidden_state, ref["last_hidden_state"])
    if name == "tiny-bert":
        for i, h in enumerate(out.hidden_states):
            parity(f"{tag} hidden_states[{i}]", h, ref[f"hidden_states/{i}"])
        for i in range(model.config.n_layers):
            if f"attentions/{i}" in ref:
                parity(f"{tag} attentions[{i}]", out.attentions[i][1], ref[f"attentions/{i}"])
    if "pooler_output" in ref:
        parity(f"{tag} pooler_output", out.pooler_output, ref["pooler_output"])
    else:  # task models have one only where their head uses it (checked by the logits)
        assert (out.pooler_output is None) == (name != "tiny-bert-seqcls")
    if name == "tiny-bert-mlm":
        positions = META["mlm_positions"]
        logits = model.masked_lm(ids, mask, token_type_ids=types)[:, positions]
        parity(f"{tag} MLM logits", logits, ref["logits"])
    if name == "tiny-bert-seqcls":
        logits = model.sequence_classification(ids, mask, token_type_ids=types)
        parity(f"{tag} sequence logits", logits, ref["logits"])
        assert len(model.config.id2label) == logits.shape[1] == 3
    if name == "tiny-bert-tokcls":
        assert model.config.activation == "relu"
        logits = model.token_classification(ids, mask, token_type_ids=types)
        parity(f"{tag} token logits", logits, ref["logits"])
    if name == "tiny-bert-qa":
        start, end = model.question_answering(ids, mask, token_type_ids=types)
        parity(f"{tag} QA start logits", start, ref["start_logits"])
        parity(f"{tag} QA end logits", end, ref["end_logits"])


def test_heads_are_found_by_their_bert_names():
    heads = {name: npdistil.load(FIXTURES / name).task_heads for name in TINY_BERTS}
    assert heads == {
        "tiny-bert": (),
        "tiny-bert-mlm": ("masked_lm",),
        "tiny-bert-seqcls": ("sequence_classification",),
        "tiny-bert-tokcls": ("token_classification",),
        "tiny-bert-qa": ("question_answering",),
    }
    seqcls = npdistil.load(FIXTURES / "tiny-bert-seqcls").heads.sequence_classification
    assert seqcls.activation == "tanh"  # BERT's pooler, not DistilBERT's ReLU
    mlm = npdistil.load(FIXTURES / "tiny-bert-mlm")
    assert np.shares_memory(mlm.heads.masked_lm.projector.weight, mlm._file.weights.embeddings.word)


def test_token_type_zero_when_omitted(parity):
    model = npdistil.load(FIXTURES / "tiny-bert")
    ids, mask = REF["tiny-bert/single/input_ids"], REF["tiny-bert/single/attention_mask"]
    parity(
        "BERT token types omitted = zeros",
        model(ids, mask).last_hidden_state,
        REF["tiny-bert/single/last_hidden_state"],
    )
    pairs = REF["tiny-bert/pairs/input_ids"], REF["tiny-bert/pairs/attention_mask"]
    wrong = np.abs(model(*pairs).last_hidden_state - REF["tiny-bert/pairs/last_hidden_state"])
    print(f"a pair run as all type 0: max abs error {wrong.max():.3g}")
    assert wrong.max() > 0.1  # token types matter: the reference is not passed by accident


def test_bert_checkpoint_without_prefix_and_with_it_give_the_same_model(tmp_path):
    sd = safetensors.numpy.load_file(FIXTURES / "tiny-bert" / "model.safetensors")
    folder = checkpoint_copy(FIXTURES / "tiny-bert", tmp_path / "p", "model.safetensors")
    safetensors.numpy.save_file(
        {f"bert.{k}": v for k, v in sd.items()}, folder / "model.safetensors"
    )
    a, b = npdistil.load(FIXTURES / "tiny-bert"), npdistil.load(folder)
    ids = REF["tiny-bert/pairs/input_ids"]
    types = REF["tiny-bert/pairs/token_type_ids"]
    np.testing.assert_array_equal(
        a(ids, token_type_ids=types).last_hidden_state,
        b(ids, token_type_ids=types).last_hidden_state,
    )


def test_missing_token_type_embeddings_are_named(tmp_path):
    folder = checkpoint_copy(FIXTURES / "tiny-bert", tmp_path / "m", "model.safetensors")
    sd = safetensors.numpy.load_file(folder / "model.safetensors")
    del sd["embeddings.token_type_embeddings.weight"]
    safetensors.numpy.save_file(sd, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="embeddings.token_type_embeddings.weight"):
        npdistil.load(folder)


def test_a_bert_sequence_classifier_without_its_pooler_is_refused(tmp_path):
    folder = checkpoint_copy(FIXTURES / "tiny-bert-seqcls", tmp_path / "m", "model.safetensors")
    sd = safetensors.numpy.load_file(folder / "model.safetensors")
    sd = {k: v for k, v in sd.items() if "pooler" not in k}
    safetensors.numpy.save_file(sd, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="needs the pooler"):
        npdistil.load(folder)


# ---- token type ids: checks ----------------------------------------------------------------------


def test_bad_token_type_ids_are_refused_clearly():
    bert = npdistil.load(FIXTURES / "tiny-bert")
    ids = np.array([[2, 50, 60, 3]])
    with pytest.raises(InputError, match=r"token_type_ids\[0, 2\] = 2 is outside \[0, 2\)"):
        bert(ids, token_type_ids=np.array([[0, 0, 2, 0]]))
    with pytest.raises(InputError, match="token_type_ids has shape"):
        bert(ids, token_type_ids=np.zeros((1, 3), np.int64))
    with pytest.raises(InputTypeError, match="token_type_ids must be integers"):
        bert(ids, token_type_ids=np.zeros((1, 4)))


def test_distilbert_refuses_non_zero_token_types_and_accepts_zeros():
    distil = npdistil.load(FIXTURES / "tiny")
    ids = np.array([[2, 50, 60, 3]])
    with pytest.raises(InputError, match="distilbert has no token-type embeddings"):
        distil(ids, token_type_ids=np.array([[0, 0, 1, 1]]))
    np.testing.assert_array_equal(
        distil(ids, token_type_ids=np.zeros((1, 4), np.int64)).last_hidden_state,
        distil(ids).last_hidden_state,
    )


# ---- text pairs in the tokenizer ----------------------------------------------------------------


def test_tokenizer_pairs_give_transformers_ids_types_and_offsets():
    tok = npdistil.load(FIXTURES / "tiny-bert").tokenizer
    firsts, seconds = zip(*META["pairs"], strict=True)
    with pytest.warns(UserWarning, match="1 pair"):
        batch = tok(list(firsts), list(seconds))
    np.testing.assert_array_equal(batch.input_ids, REF["tiny-bert/pairs/input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, REF["tiny-bert/pairs/attention_mask"])
    np.testing.assert_array_equal(batch.token_type_ids, REF["tiny-bert/pairs/token_type_ids"])
    np.testing.assert_array_equal(batch.offsets, REF["tiny-bert/pairs/offsets"])
    assert batch.truncated.tolist() == [False, False, False, True]
    single = tok(META["texts"][:4])
    np.testing.assert_array_equal(
        single.token_type_ids, np.zeros_like(single.input_ids)
    )  # BERT: zeros for single texts


def test_distilbert_tokenizer_pairs_have_no_token_types():
    batch = npdistil.load(FIXTURES / "tiny").tokenizer(["Hello"], ["world"])
    assert batch.token_type_ids is None  # as transformers' DistilBERT tokenizer
    assert batch.tokens == [
        ["[CLS]", "H", "##e", "##ll", "##o", "[SEP]", "w", "##or", "##ld", "[SEP]"]
    ]


@pytest.mark.parametrize(
    ("n_a", "n_b", "room", "kept"),
    [(3, 4, 10, (3, 4)), (3, 10, 8, (3, 5)), (10, 3, 8, (5, 3)), (10, 10, 9, (4, 5)),
     (11, 10, 9, (5, 4)), (0, 20, 6, (0, 6))],
)  # fmt: skip
def test_longest_first_truncation(n_a, n_b, room, kept):
    assert longest_first(n_a, n_b, room) == kept


def test_tokenizer_pairs_need_one_pair_per_text():
    tok = npdistil.load(FIXTURES / "tiny-bert").tokenizer
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        tok(["a", "b"], ["c"])


def test_question_answering_from_a_tokenized_pair(parity):
    model = npdistil.load(FIXTURES / "tiny-bert-qa")
    firsts, seconds = zip(*META["pairs"][:3], strict=True)
    batch = model.tokenizer(list(firsts), list(seconds))
    start, _ = model.question_answering(
        batch.input_ids, batch.attention_mask, token_type_ids=batch.token_type_ids
    )
    n = batch.input_ids.shape[1]
    parity(
        "BERT QA from model.tokenizer pairs", start, REF["tiny-bert-qa/pairs/start_logits"][:3, :n]
    )


def test_repr_and_info_say_bert(tmp_path, capsys):
    from npdistil.cli import main

    model = npdistil.load(FIXTURES / "tiny-bert")
    assert repr(model).startswith("Model(BERT: ")  # the class fits every family; repr names it
    assert repr(npdistil.load(FIXTURES / "tiny")).startswith("Model(DistilBERT: ")
    assert npdistil.DistilBert is npdistil.Model  # the old name still works
    assert main(["info", str(FIXTURES / "tiny-bert")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["model_type"] == "bert" and info["config"]["hidden_size"] == 20


def test_fixture_folders_are_what_the_script_says():
    for name, meta in META["models"].items():
        files = sorted(p.name for p in Path(FIXTURES / name).iterdir())
        assert files == meta["files"], name

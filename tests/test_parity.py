"""npdistil against transformers' own outputs (made by scripts/make_reference.py).

Tiny models with odd sizes (a wrong transpose or reshape fails) from both weight formats, and
the full-size distilbert-base-cased architecture rebuilt from a seed with NumPy alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, TINY_MODELS, checkpoint_copy, tiny_reference

import npdistil

META, REF = tiny_reference()


def _formats(name: str) -> list[str]:
    return [f for f in ("model.safetensors", "pytorch_model.bin") if (FIXTURES / name / f).exists()]


CASES = [(name, fmt) for name in TINY_MODELS for fmt in _formats(name)]


@pytest.mark.parametrize(("name", "weights"), CASES, ids=[f"{n}-{w}" for n, w in CASES])
def test_tiny_models_match_transformers(name, weights, tmp_path, parity):
    model = npdistil.load(checkpoint_copy(FIXTURES / name, tmp_path / name, weights))
    ids, mask = REF[f"{name}/input_ids"], REF[f"{name}/attention_mask"]
    out = model(ids, mask, output_hidden_states=True, output_attentions=True)
    tag = f"{name} ({weights})"
    parity(f"{tag} last_hidden_state", out.last_hidden_state, REF[f"{name}/last_hidden_state"])
    assert len(out.hidden_states) == model.config.n_layers + 1
    for i, h in enumerate(out.hidden_states):
        parity(f"{tag} hidden_states[{i}]", h, REF[f"{name}/hidden_states/{i}"])
    assert len(out.attentions) == model.config.n_layers
    for i, a in enumerate(out.attentions):
        parity(f"{tag} attentions[{i}]", a, REF[f"{name}/attentions/{i}"])

    if name == "tiny-mlm":
        parity(f"{tag} MLM logits", model.masked_lm(ids, mask), REF[f"{name}/logits"])
    if name == "tiny-seqcls":
        logits = model.sequence_classification(ids, mask)
        parity(f"{tag} classification logits", logits, REF[f"{name}/logits"])
        assert model.config.id2label and len(model.config.id2label) == logits.shape[1]
    if name == "tiny-tokcls":
        parity(f"{tag} token logits", model.token_classification(ids, mask), REF[f"{name}/logits"])
    if name == "tiny-qa":
        start, end = model.question_answering(ids, mask)
        parity(f"{tag} QA start logits", start, REF[f"{name}/start_logits"])
        parity(f"{tag} QA end logits", end, REF[f"{name}/end_logits"])


def test_tokenizer_output_is_fed_to_the_model_like_transformers(tmp_path, parity):
    """Texts -> our tokenizer -> our model equals transformers' tokenizer -> transformers."""
    model = npdistil.load(FIXTURES / "tiny")
    with pytest.warns(UserWarning, match="truncated"):
        batch = model.tokenizer(META["texts"])
    np.testing.assert_array_equal(batch.input_ids, REF["tiny/input_ids"])
    out = model(batch.input_ids, batch.attention_mask)
    parity("tiny texts end to end", out.last_hidden_state, REF["tiny/last_hidden_state"])


# ---- the full-size architecture -----------------------------------------------------------------

FULL = np.load(FIXTURES / "full_size_reference.npz")
FULL_META = json.loads((FIXTURES / "full_size_reference.json").read_text())


def test_full_size_weights_regenerate_exactly():
    import synthetic

    digest = synthetic.state_dict_digest(synthetic.full_size_state_dict(FULL_META["weights_seed"]))
    print("full-size weights digest", digest)
    assert digest == FULL_META["weights_digest"], (
        "NumPy's generator no longer reproduces the reference weights: rerun "
        "scripts/make_reference.py to refresh tests/fixtures/full_size_reference.*"
    )


@pytest.fixture(scope="module", params=["model.safetensors", "pytorch_model.bin"])
def full_size_model(request, full_size_folder, tmp_path_factory):
    if request.param == "model.safetensors":
        folder = full_size_folder
    else:  # the same weights written as torch.save would, by the torch-free test writer
        import synthetic
        from torchzip_writer import write_torch_zip

        folder = checkpoint_copy(full_size_folder, tmp_path_factory.mktemp("bin") / "m", "none")
        write_torch_zip(folder / "pytorch_model.bin", synthetic.full_size_state_dict(0))
    cache = tmp_path_factory.mktemp("cache")
    return request.param, npdistil.load(folder, cache_dir=cache)


def test_full_size_padded_batch_matches_transformers(full_size_model, parity):
    fmt, model = full_size_model
    assert (model.config.dim, model.config.n_layers, model.config.vocab_size) == (768, 6, 28996)
    out = model(
        FULL["batch/input_ids"],
        FULL["batch/attention_mask"],
        output_hidden_states=True,
        output_attentions=True,
    )
    parity(
        f"full-size ({fmt}) batch last_hidden_state",
        out.last_hidden_state,
        FULL["batch/last_hidden_state"],
    )
    positions = FULL["batch/hidden_states_positions"]
    for i, h in enumerate(out.hidden_states):
        parity(
            f"full-size ({fmt}) hidden_states[{i}]",
            h[:, positions],
            FULL[f"batch/hidden_states/{i}"],
        )
    seq = int(FULL["batch/attentions_sequence"])
    for layer in FULL["batch/attentions_layers"]:
        parity(
            f"full-size ({fmt}) attentions[{layer}]",
            out.attentions[layer][seq],
            FULL[f"batch/attentions/{layer}"],
        )


def test_full_size_512_tokens_matches_transformers(full_size_model, parity):
    fmt, model = full_size_model
    out = model(FULL["long/input_ids"], FULL["long/attention_mask"])
    assert out.last_hidden_state.shape == (1, 512, 768)
    parity(
        f"full-size ({fmt}) 512 tokens",
        out.last_hidden_state[:, FULL["long/positions"]],
        FULL["long/last_hidden_state"],
    )


def test_converted_file_is_memory_mapped(full_size_model):
    _, model = full_size_model
    word = model._file.weights.embeddings.word
    assert isinstance(word.base, np.memmap) or isinstance(getattr(word, "base", None), np.ndarray)
    assert not word.flags.writeable
    assert Path(model.path).stat().st_size > 250e6

"""Sanity checks of the committed reference fixtures themselves (not of npdistil).

They run without torch. If one fails, the fixtures or the libraries that read them changed:
regenerate with `python scripts/make_reference.py` (see its docstring) before trusting any
parity test.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import synthetic
from safetensors.numpy import load_file
from tokenizers import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
TINY_FOLDERS = ["tiny", "tiny-mlm", "tiny-sinusoidal", "tiny-seqcls", "tiny-qa", "tiny-tokcls"]
HEAD_KEYS = {
    "tiny": [],
    "tiny-mlm": [
        "vocab_transform.weight",
        "vocab_transform.bias",
        "vocab_layer_norm.weight",
        "vocab_layer_norm.bias",
        "vocab_projector.bias",
    ],
    "tiny-sinusoidal": [],
    "tiny-seqcls": [
        "pre_classifier.weight",
        "pre_classifier.bias",
        "classifier.weight",
        "classifier.bias",
    ],
    "tiny-qa": ["qa_outputs.weight", "qa_outputs.bias"],
    "tiny-tokcls": ["classifier.weight", "classifier.bias"],
}


@pytest.fixture(scope="module")
def tiny_ref() -> tuple[dict, dict[str, np.ndarray]]:
    info = json.loads((FIXTURES / "tiny_reference.json").read_text(encoding="utf-8"))
    with np.load(FIXTURES / "tiny_reference.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return info, arrays


def test_full_size_weights_digest_matches_reference() -> None:
    """The NumPy-generated full-size weights are the ones the reference outputs were made from."""
    info = json.loads((FIXTURES / "full_size_reference.json").read_text(encoding="utf-8"))
    with np.load(FIXTURES / "full_size_reference.npz", allow_pickle=False) as z:
        stored = str(z["weights/digest"])
        seed = int(z["weights/seed"])
        ids = {k: z[k] for k in ("long/input_ids", "batch/input_ids", "batch/attention_mask")}
    digest = synthetic.state_dict_digest(synthetic.full_size_state_dict(seed))
    print(f"full_size_state_dict({seed}) digest {digest} (stored {stored})")
    assert stored == info["weights_digest"]
    assert digest == stored, (
        "NumPy's generator no longer draws the same full-size weights: regenerate the fixtures "
        "(scripts/make_reference.py); this is not a parity failure"
    )
    inputs = synthetic.full_size_inputs()
    assert np.array_equal(inputs["long_input_ids"], ids["long/input_ids"])
    assert np.array_equal(inputs["batch_input_ids"], ids["batch/input_ids"])
    assert np.array_equal(inputs["batch_attention_mask"], ids["batch/attention_mask"])


def test_full_size_reference_is_small_and_complete() -> None:
    path = FIXTURES / "full_size_reference.npz"
    size = path.stat().st_size
    print(f"{path.name}: {size:,} bytes")
    assert size < 1_500_000
    with np.load(path, allow_pickle=False) as z:
        positions = z["long/positions"]
        assert z["long/last_hidden_state"].shape == (1, len(positions), 768)
        assert z["batch/last_hidden_state"].shape == (3, 40, 768)
        n_pos = len(z["batch/hidden_states_positions"])
        for i in range(7):
            assert z[f"batch/hidden_states/{i}"].shape == (3, n_pos, 768)
        for i in z["batch/attentions_layers"]:
            probs = z[f"batch/attentions/{i}"]
            assert probs.shape == (12, 40, 40)
            np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_synthetic_config_matches_keys() -> None:
    config = synthetic.full_size_config()
    assert config["model_type"] == "distilbert"
    shapes = dict(synthetic.full_size_key_shapes(config))
    assert shapes["embeddings.word_embeddings.weight"] == (28996, 768)
    assert shapes["transformer.layer.5.ffn.lin1.weight"] == (3072, 768)
    assert len(shapes) == 4 + 6 * 16


@pytest.mark.parametrize("folder", TINY_FOLDERS)
def test_tokenizer_json_reproduces_transformers(folder: str, tiny_ref) -> None:
    """tokenizers alone, from tokenizer.json, gives what transformers' fast tokenizer gave."""
    info, arrays = tiny_ref
    call = info["tokenizer_call"]
    tok = Tokenizer.from_file(str(FIXTURES / folder / "tokenizer.json"))
    tok.enable_truncation(max_length=call["max_length"])
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tok.encode_batch(info["texts"])
    ids = np.array([e.ids for e in encodings])
    mask = np.array([e.attention_mask for e in encodings])
    offsets = np.array([e.offsets for e in encodings])
    word_ids = np.array([[-1 if w is None else w for w in e.word_ids] for e in encodings])
    print(f"{folder}: batch {ids.shape}, lengths {mask.sum(1).tolist()}")
    np.testing.assert_array_equal(ids, arrays[f"{folder}/input_ids"])
    np.testing.assert_array_equal(mask, arrays[f"{folder}/attention_mask"])
    np.testing.assert_array_equal(offsets, arrays[f"{folder}/offsets"])
    np.testing.assert_array_equal(word_ids, arrays[f"{folder}/word_ids"])
    # The batch covers a truncated row and a row that is mostly padding.
    assert mask[info["long_text_index"]].sum() == call["max_length"] == ids.shape[1]
    assert mask[info["short_text_index"]].sum() == 3


@pytest.mark.parametrize("folder", TINY_FOLDERS)
def test_tokenizer_files_agree(folder: str) -> None:
    path = FIXTURES / folder
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["do_lower_case"] is False
    assert config["model_max_length"] == 40
    assert config["tokenizer_class"] == "DistilBertTokenizer"
    assert tok.normalizer is not None
    assert tok.normalizer.normalize_str("Café ÄB") == "Café ÄB"  # cased, accents kept


@pytest.mark.parametrize("folder", TINY_FOLDERS)
def test_safetensors_keys(folder: str) -> None:
    path = FIXTURES / folder
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    sd = load_file(str(path / "model.safetensors"))
    prefix = "" if folder in ("tiny", "tiny-sinusoidal") else "distilbert."
    d, f, v = config["dim"], config["hidden_dim"], config["vocab_size"]
    base = dict(synthetic.full_size_key_shapes(config))
    assert base["embeddings.word_embeddings.weight"] == (v, d)
    assert base["transformer.layer.0.ffn.lin1.weight"] == (f, d)
    expected = {prefix + k for k in base} | set(HEAD_KEYS[folder])
    assert set(sd) == expected, set(sd) ^ expected
    for k, shape in base.items():
        assert sd[prefix + k].shape == shape, k
        assert sd[prefix + k].dtype == np.float32, k
    if folder == "tiny-seqcls":
        assert sd["classifier.weight"].shape == (3, d)
        assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    if folder == "tiny-tokcls":
        assert sd["classifier.weight"].shape == (5, d)
    if folder == "tiny-qa":
        assert sd["qa_outputs.weight"].shape == (2, d)


def test_sinusoidal_table_is_stored() -> None:
    """transformers saves the fixed sin/cos position table in the checkpoint like a learned one."""
    config = json.loads((FIXTURES / "tiny-sinusoidal" / "config.json").read_text())
    assert config["sinusoidal_pos_embds"] is True
    table = load_file(str(FIXTURES / "tiny-sinusoidal" / "model.safetensors"))[
        "embeddings.position_embeddings.weight"
    ]
    n, d = table.shape
    j = np.arange(d)
    angle = np.arange(n)[:, None] / np.power(10000.0, 2 * (j // 2) / d)
    expected = np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)
    err = float(np.abs(table - expected).max())
    print(f"sinusoidal table max abs error {err:.3g}")
    assert err < 1e-6


@pytest.mark.parametrize("folder", ["tiny", "tiny-mlm"])
def test_pytorch_bin_is_a_zip_checkpoint(folder: str) -> None:
    with zipfile.ZipFile(FIXTURES / folder / "pytorch_model.bin") as z:
        entries = z.infolist()
    names = [i.filename for i in entries]
    assert any(n.endswith("/data.pkl") for n in names), names
    assert all(i.compress_type == zipfile.ZIP_STORED for i in entries)


@pytest.mark.parametrize("folder", TINY_FOLDERS)
def test_tiny_outputs_are_consistent(folder: str, tiny_ref) -> None:
    info, arrays = tiny_ref
    meta = info["models"][folder]
    n_layers = meta["config"]["n_layers"]
    mask = arrays[f"{folder}/attention_mask"]
    b, t = mask.shape
    assert {k for k in arrays if k.startswith(folder + "/")} == set(meta["keys"])
    hidden = [arrays[f"{folder}/hidden_states/{i}"] for i in range(n_layers + 1)]
    assert f"{folder}/hidden_states/{n_layers + 1}" not in arrays
    np.testing.assert_array_equal(hidden[-1], arrays[f"{folder}/last_hidden_state"])
    for i in range(n_layers):
        probs = arrays[f"{folder}/attentions/{i}"]
        assert probs.shape == (b, meta["config"]["n_heads"], t, t)
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        # Padded keys get exactly zero weight, for every query, padded queries included.
        assert not probs[np.broadcast_to(mask[:, None, None, :] == 0, probs.shape)].any()

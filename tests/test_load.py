"""Loading local folders and npdistil files, conversion, the converted cache, and bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import FIXTURES, checkpoint_copy, tiny_reference

import npdistil
from npdistil.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    InputTypeError,
    NpdistilError,
)
from npdistil.weights import convert

META, REF = tiny_reference()
IDS, MASK, EXPECTED = (
    REF["tiny/input_ids"],
    REF["tiny/attention_mask"],
    REF["tiny/last_hidden_state"],
)


def _max_err(model: npdistil.DistilBert) -> float:
    return float(np.abs(model(IDS, MASK).last_hidden_state - EXPECTED).max())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return checkpoint_copy(FIXTURES / "tiny", tmp_path / "tiny", "model.safetensors")


def _state_dict(folder: Path) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(folder / "model.safetensors")


def _rewrite(folder: Path, sd: dict[str, np.ndarray]) -> None:
    safetensors.numpy.save_file(sd, folder / "model.safetensors")


def _write_raw_safetensors(path: Path, arrays: dict[str, np.ndarray], dtype: str) -> None:
    header, offset = {}, 0
    for name, a in arrays.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    data = b"".join(a.tobytes() for a in arrays.values())
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


# ---- sources ------------------------------------------------------------------------------------


def test_converted_file_loads_by_path_and_reports_its_source(folder, tmp_path):
    out = convert.convert_folder(folder, tmp_path / "m.safetensors")
    model = npdistil.load(out)
    assert model.path == out
    assert _max_err(model) <= 1e-4
    assert model.source["file"] == "model.safetensors"
    assert model.source["sha256"] == convert.sha256_of(folder / "model.safetensors")
    meta = safetensors.safe_open(out, "np").metadata()
    assert meta["format"] == "npdistil" and meta["format_version"] == "3"
    assert json.loads(meta["config"])["dim"] == 20 and "tokenizer" in meta


def test_folder_is_converted_once_then_memory_mapped(folder, tmp_path):
    first = npdistil.load(folder)
    stamp = first.path.stat().st_mtime_ns
    second = npdistil.load(folder)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert not second.heads.masked_lm
    word = second._file.weights.embeddings.word
    assert not word.flags.writeable and not word.flags.owndata  # a view of the mapping


def test_changed_folder_is_converted_again_replacing_the_stale_copy(folder, tmp_path):
    first = npdistil.load(folder)
    inode = first.path.stat().st_ino
    sd = _state_dict(folder)
    sd["embeddings.LayerNorm.bias"] = sd["embeddings.LayerNorm.bias"] + 1
    _rewrite(folder, sd)
    os.utime(folder / "model.safetensors", ns=(1, 1))
    second = npdistil.load(folder)
    # The same name, a new file: the stale copy is replaced, not kept beside the new one.
    assert second.path == first.path and second.path.stat().st_ino != inode
    assert _leftovers(tmp_path / "npdistil-cache") == [first.path.name]
    assert _max_err(first) <= 1e-4  # the old mapping still reads the old weights
    assert _max_err(second) > 0.1  # the new copy has the changed bias
    inode = second.path.stat().st_ino
    (folder / "model.safetensors").touch()  # a touch alone: converted again, still one copy
    third = npdistil.load(folder)
    assert third.path == first.path and third.path.stat().st_ino != inode
    assert _leftovers(tmp_path / "npdistil-cache") == [first.path.name]


def test_vocab_txt_only_tokenizer_equals_tokenizer_json(folder):
    (folder / "tokenizer.json").unlink()
    model = npdistil.load(folder)
    with pytest.warns(UserWarning, match="truncated"):
        batch = model.tokenizer(META["texts"])
    np.testing.assert_array_equal(batch.input_ids, IDS)
    np.testing.assert_array_equal(batch.attention_mask, MASK)


def test_a_tokenizer_without_post_processor_gets_bert_special_tokens(folder):
    definition = json.loads((folder / "tokenizer.json").read_text())
    definition["post_processor"] = None  # as the tokenizers trainer writes it
    (folder / "tokenizer.json").write_text(json.dumps(definition))
    with pytest.warns(UserWarning, match="truncated"):
        batch = npdistil.load(folder).tokenizer(META["texts"])
    np.testing.assert_array_equal(batch.input_ids, IDS)


def test_no_tokenizer_still_runs_ids(folder):
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        (folder / name).unlink()
    model = npdistil.load(folder)
    assert _max_err(model) <= 1e-4
    with pytest.raises(NpdistilError, match="without a tokenizer"):
        model.tokenizer(["hi"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_half_and_double_precision_sources_are_widened_to_float32(folder, dtype):
    sd = _state_dict(folder)
    if dtype == "bfloat16":  # NumPy has none: write the raw bits (float32's upper half) by hand
        bits = {k: (v.view(np.uint32) >> 16).astype("<u2") for k, v in sd.items()}
        _write_raw_safetensors(folder / "model.safetensors", bits, "BF16")
        expected = {k: (b.astype(np.uint32) << 16).view(np.float32) for k, b in bits.items()}
    else:
        _rewrite(folder, {k: v.astype(dtype) for k, v in sd.items()})
        expected = {k: v.astype(dtype).astype(np.float32) for k, v in sd.items()}
    model = npdistil.load(folder)
    np.testing.assert_array_equal(
        model._file.weights.embeddings.word, expected["embeddings.word_embeddings.weight"]
    )
    assert model._file.weights.blocks[0].qkv.weight.dtype == np.float32


def test_task_model_prefix_and_tied_projector(tmp_path):
    model = npdistil.load(
        checkpoint_copy(FIXTURES / "tiny-mlm", tmp_path / "m", "model.safetensors")
    )
    assert model.task_heads == ("masked_lm",)
    projector = model.heads.masked_lm.projector.weight
    assert np.shares_memory(projector, model._file.weights.embeddings.word)  # tied: no copy


# ---- bad checkpoints ----------------------------------------------------------------------------


def test_missing_config(folder):
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json: no such config file"):
        npdistil.load(folder)


def test_config_of_another_model(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "deberta-v2"}))
    with pytest.raises(ConfigError, match="model_type is 'deberta-v2'"):
        npdistil.load(folder)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dim", 21, "not divisible by n_heads"),
        ("n_layers", 0, "'n_layers' must be a positive integer"),
        ("activation", "swish", "activation 'swish' is not supported"),
    ],
)
def test_bad_config_values(folder, field, value, message):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match=message):
        npdistil.load(folder)


def test_config_not_json(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON config"):
        npdistil.load(folder)


def test_missing_weights(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        npdistil.load(folder)


def test_missing_tensor_is_named(folder, tmp_path):
    sd = _state_dict(folder)
    del sd["transformer.layer.1.ffn.lin2.weight"]
    _rewrite(folder, sd)
    with pytest.raises(
        CheckpointError, match=r"missing tensor 'transformer.layer.1.ffn.lin2.weight'"
    ):
        npdistil.load(folder)
    assert _leftovers(tmp_path / "npdistil-cache") == []  # nothing half-written


def test_misshaped_tensor_is_named(folder):
    sd = _state_dict(folder)
    sd["transformer.layer.0.attention.q_lin.weight"] = sd[
        "transformer.layer.0.attention.q_lin.weight"
    ].T.copy()  # 20x20 stays 20x20: transpose a non-square one instead
    sd["transformer.layer.0.ffn.lin1.weight"] = sd["transformer.layer.0.ffn.lin1.weight"].T.copy()
    _rewrite(folder, sd)
    with pytest.raises(
        CheckpointError, match=r"'transformer.layer.0.ffn.lin1.weight' has shape \(20, 37\)"
    ):
        npdistil.load(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_by_name(folder, bad):
    sd = _state_dict(folder)
    sd["transformer.layer.2.output_layer_norm.weight"][3] = bad
    _rewrite(folder, sd)
    with pytest.raises(
        CheckpointError, match=r"'transformer.layer.2.output_layer_norm.weight' has 1 NaN"
    ):
        npdistil.load(folder)


def test_integer_weights_are_refused(folder):
    sd = _state_dict(folder)
    sd["embeddings.LayerNorm.weight"] = sd["embeddings.LayerNorm.weight"].astype(np.int32)
    _rewrite(folder, sd)
    with pytest.raises(CheckpointError, match="int32, not a float"):
        npdistil.load(folder)


def test_unused_tensors_are_reported(folder):
    sd = _state_dict(folder)
    sd["pooler.dense.weight"] = np.zeros((2, 2), np.float32)
    _rewrite(folder, sd)
    with pytest.warns(
        UserWarning, match="ignoring 1 tensors npdistil does not use: 'pooler.dense.weight'"
    ):
        npdistil.load(folder)


def test_tokenizer_larger_than_the_embedding_table(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    sd = _state_dict(folder)
    sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][:100].copy()
    _rewrite(folder, sd)
    with pytest.raises(CheckpointError, match="beyond the model's vocab_size 100"):
        npdistil.load(folder)


def test_plain_safetensors_file_is_not_an_npdistil_file(folder):
    with pytest.raises(CheckpointError, match="not an npdistil file"):
        npdistil.load(folder / "model.safetensors")


def test_newer_format_version_is_refused(folder, tmp_path):
    out = convert.convert_folder(folder, tmp_path / "m.safetensors")
    header = safetensors.numpy.load_file(out)
    meta = safetensors.safe_open(out, "np").metadata()
    safetensors.numpy.save_file(header, out, metadata={**meta, "format_version": "99"})
    with pytest.raises(CheckpointError, match="newer npdistil"):
        npdistil.load(out)


def test_nonexistent_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        npdistil.load(str(tmp_path / "nothing-here"))
    with pytest.raises(CheckpointError, match="no such file or folder"):
        npdistil.load("./model.safetensors")


def test_broken_cached_copy_is_converted_again(folder):
    first = npdistil.load(folder)
    first.path.write_bytes(b"garbage")
    second = npdistil.load(folder)
    assert second.path == first.path and _max_err(second) <= 1e-4


def test_failed_write_leaves_nothing_behind(folder, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.numpy.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        npdistil.load(folder)
    assert _leftovers(tmp_path / "npdistil-cache") == []


# ---- bad calls ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(
    ("ids", "mask", "error", "message"),
    [
        (np.zeros((0, 5), np.int64), None, InputError, "empty"),
        (np.zeros((2, 0), np.int64), None, InputError, "empty"),
        (np.zeros((1, 41), np.int64), None, InputError, "more than the model's 40 positions"),
        (np.array([[2, 5, 700]]), None, InputError, r"input_ids\[0, 2\] = 700 is outside"),
        (np.array([[2, -1, 3]]), None, InputError, r"input_ids\[0, 1\] = -1"),
        (np.array([[2.0, 5.0]]), None, InputTypeError, "must be integers"),
        (np.array([["a", "b"]]), None, InputTypeError, "must be integers"),
        (np.zeros((2, 3, 4), np.int64), None, InputError, r"\[batch, tokens\]"),
        (np.zeros((2, 3), np.int64), np.ones((2, 4)), InputError, "attention_mask has shape"),
        (np.zeros((2, 3), np.int64), np.full((2, 3), 2), InputError, "only 0 and 1"),
    ],
)
def test_bad_model_inputs(tiny, ids, mask, error, message):
    with pytest.raises(error, match=message):
        tiny(ids, mask)


def test_one_dimensional_ids_are_one_sequence(tiny):
    out = tiny(IDS[0])
    np.testing.assert_allclose(out.last_hidden_state, tiny(IDS[:1]).last_hidden_state)


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ([], InputError, "empty batch"),
        (["ok", 3], InputTypeError, "text 1 is a int"),
        (["ok", None], InputTypeError, "text 1 is a NoneType"),
        (["ok", "fine", b"bytes"], InputTypeError, "text 2 is a bytes"),
        (b"bytes", InputTypeError, "got bytes"),
        (None, InputTypeError, "got NoneType"),
        (["ok", "bad \ud800 surrogate"], InputError, "text 1 is not valid Unicode"),
    ],
)
def test_bad_texts_name_the_culprit(tiny, texts, error, message):
    with pytest.raises(error, match=message):
        tiny.tokenizer(texts)


def test_missing_head_is_a_clear_error(tiny):
    with pytest.raises(NpdistilError, match="no masked_lm head"):
        tiny.masked_lm(IDS, MASK)


def test_cli_convert_and_info(folder, tmp_path, capsys):
    from npdistil.cli import main

    out = tmp_path / "out" / "model.safetensors"
    assert main(["convert", str(folder), str(out)]) == 0
    assert npdistil.load(out).config.dim == 20
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tensors"] == 40 and info["parameters"] == 24731 and info["tokenizer"]
    assert info["source"]["sha256"] == convert.sha256_of(folder / "model.safetensors")


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    from npdistil.cli import main

    assert main(["info", str(tmp_path / "missing.safetensors")]) == 1
    assert "npdistil: error:" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---- pickling -----------------------------------------------------------------------------------


def test_a_model_pickles_as_a_reference_to_its_file_not_its_weights(full_size_folder, tmp_path):
    import pickle

    model = npdistil.load(full_size_folder, cache_dir=tmp_path)
    data = pickle.dumps(model)
    size = model.path.stat().st_size
    print(f"pickled model: {len(data)} bytes; its converted file: {size / 1e6:.0f} MB")
    assert len(data) < 1_000 and size > 250e6
    again = pickle.loads(data)
    assert again.path == model.path and again.config == model.config
    text = ["Pickled and opened again."]
    np.testing.assert_array_equal(again.encode(text), model.encode(text))
    moved = tmp_path / "moved.safetensors"
    model.path.rename(moved)
    with pytest.raises(CheckpointError, match=str(model.path)):
        pickle.loads(data)  # a reference: the file must be there on the other side

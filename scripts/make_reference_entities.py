"""Regenerate tests/fixtures/tasks/entities.json: what transformers' token-classification
pipeline gives on the tiny token-classification checkpoints.

The tests never import torch: they compare ``model.entities(...)`` with the results stored here,
made by ``transformers.pipeline("token-classification", ...)`` itself. Run it from the
repository root, after scripts/make_reference.py and scripts/make_reference_bert.py (which
write the checkpoints tests/fixtures/tiny-tokcls and tests/fixtures/tiny-bert-tokcls):

    pip install -e ".[reference]"
    python scripts/make_reference_entities.py

The weights are random, so the tags are too: the texts were picked so that every aggregation
strategy forms groups of several tokens (B- then I-, or I- runs), which the script asserts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import pipeline

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))
from make_reference import TEXTS, versions  # noqa: E402  (shared helpers)

CHECKPOINTS = ["tiny-tokcls", "tiny-bert-tokcls"]
STRATEGIES = ["none", "simple", "first", "average", "max"]
LONG = " ".join([TEXTS[4]] * 2)  # ~130 pieces: four windows of the tiny models' 40 positions

ENTITY_TEXTS = [
    TEXTS[0],  # Hello world!
    TEXTS[1],  # cased words, punctuation
    TEXTS[2],  # accents, an emoji ([UNK]), CJK, a tab, an ellipsis
    "Numbers: 1,234,567.89; 0x1F; -273.15°C; 24/7; the 3rd of May 1999.",
    "",
    "The class Python uses: a function, a method, an exception.",
    LONG,  # truncated at 40 tokens without a stride; windows with one
]

# Keyword arguments of each pipeline call, all on the whole list of texts.
CALLS: list[dict[str, Any]] = [
    *({"aggregation_strategy": s} for s in STRATEGIES),
    *({"aggregation_strategy": s, "ignore_labels": []} for s in STRATEGIES[:3]),
    {"aggregation_strategy": "simple", "ignore_labels": ["O", "LOC"]},
    *({"aggregation_strategy": s, "stride": 8} for s in STRATEGIES[1:]),
    *({"aggregation_strategy": s, "stride": 20, "ignore_labels": []} for s in ("simple", "first")),
]


def plain(entity: dict[str, Any]) -> dict[str, Any]:
    """A pipeline result with Python types (its scores are NumPy float32)."""
    return {k: float(v) if k == "score" else v for k, v in entity.items()}


def multi_token_groups(groups: list[dict], tokens: list[dict], words_only: bool) -> int:
    """How many groups span at least two tokens (two words when ``words_only``: tokens not
    starting with ##), given every token of the same text (strategy "none", nothing ignored)."""

    def inside(g: dict) -> list[dict]:
        return [t for t in tokens if g["start"] <= t["start"] and t["end"] <= g["end"]]

    count = 0
    for g in groups:
        pieces = inside(g)
        if words_only:
            pieces = [t for t in pieces if not t["word"].startswith("##")]
        count += len(pieces) >= 2
    return count


def run_checkpoint(name: str) -> list[dict[str, Any]]:
    folder = f"tests/fixtures/{name}"
    ner = pipeline("token-classification", model=folder, device="cpu")
    assert ner.tokenizer.model_max_length == 40, ner.tokenizer.model_max_length
    every_token = ner(ENTITY_TEXTS, aggregation_strategy="none", ignore_labels=[])
    out = []
    for kwargs in CALLS:
        results = [[plain(e) for e in text] for text in ner(ENTITY_TEXTS, **kwargs)]
        strategy = kwargs["aggregation_strategy"]
        call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        if strategy != "none" and len(kwargs) == 1:  # the default ignore_labels, no stride
            groups = sum(
                multi_token_groups(r, t, words_only=strategy != "simple")
                for r, t in zip(results, every_token, strict=True)
            )
            assert groups > 0, f"{name} ({call}): no group of several tokens"
            print(f"{name} ({call}): {groups} multi-token groups")
        out.append(
            {
                "checkpoint": name,
                "kwargs": kwargs,
                "call": f'pipeline("token-classification", model="{folder}", device="cpu")'
                f"(texts, {call})",
                "results": results,
            }
        )
    # The pipeline's own check, which npdistil makes too: no stride without aggregation.
    try:
        ner(ENTITY_TEXTS, aggregation_strategy="none", stride=8)
    except ValueError:
        pass
    else:
        raise AssertionError("the pipeline accepted a stride with aggregation_strategy='none'")
    return out


def save_json(path: Path, info: dict[str, Any]) -> None:
    """Indented JSON with each text's results on one line: small, and a diff still shows which
    text of which call changed."""
    rows: list[str] = []

    def row(results: list[dict[str, Any]]) -> str:
        rows.append(json.dumps(results, ensure_ascii=False))
        return f"@row{len(rows) - 1}@"

    for case in info["cases"]:
        case["results"] = [row(r) for r in case["results"]]
    text = json.dumps(info, indent=1, ensure_ascii=False)
    text = re.sub(r'"@row(\d+)@"', lambda m: rows[int(m.group(1))], text)
    path.write_text(text + "\n", encoding="utf-8")


def main() -> None:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    cases = [case for name in CHECKPOINTS for case in run_checkpoint(name)]
    n = sum(len(r) for case in cases for r in case["results"])
    info = {
        "about": "transformers' token-classification pipeline on the tiny checkpoints "
        "tests/fixtures/<checkpoint> (random weights, 40 positions), made by "
        "scripts/make_reference_entities.py; each case is one pipeline call on all the texts, "
        "its results one list per text.",
        "texts": ENTITY_TEXTS,
        "cases": cases,
        "generated_with": versions() | {"numpy": np.__version__},
    }
    (FIXTURES / "tasks").mkdir(exist_ok=True)
    path = FIXTURES / "tasks" / "entities.json"
    save_json(path, info)
    print(f"wrote {path.relative_to(ROOT)}: {len(cases)} calls, {n} entities")


if __name__ == "__main__":
    main()

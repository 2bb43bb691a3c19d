"""Regenerate tests/fixtures/tasks/answer.json: transformers' question-answering pipeline on
the tiny question-answering checkpoints, for tests/test_task_answer.py.

The tests never import torch: they compare ``model.answer`` with what this script stores, made
by ``transformers.pipeline("question-answering")`` itself. transformers 5 removed that
pipeline, so this script needs transformers 4.x (made with 4.57.1). From the repository root:

    python3 -m venv /tmp/qa-ref
    /tmp/qa-ref/bin/pip install torch==2.13.0 transformers==4.57.1
    /tmp/qa-ref/bin/python scripts/make_reference_answer.py

It reads tests/fixtures/tiny-qa (DistilBertForQuestionAnswering) and tests/fixtures/tiny-bert-qa
(BertForQuestionAnswering, token types), made by scripts/make_reference.py and
make_reference_bert.py: random weights, a 700-token cased WordPiece vocabulary and 40
positions, so a context of a few sentences already runs in several windows. For every case it
records the pipeline call, its parameters, how many windows each context took, and the
pipeline's output as it came (a dict, a list of dicts, or a list of those).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference import versions  # noqa: E402  (the sibling script: shared helpers)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "tasks" / "answer.json"
CHECKPOINTS = ["tiny-qa", "tiny-bert-qa"]

LONG = (
    "The Rhine rises in the Swiss Alps and flows 1,230 kilometres to the North Sea. "
    "It passes Basel, Strasbourg, Mannheim, Cologne and Düsseldorf before it reaches the "
    "Netherlands. In 1815 the Congress of Vienna made it an international waterway; barges "
    "carry coal and grain, and tourists visit the castles between Bingen and Koblenz."
)
REPEATED = "the cat sat on the mat. The cat ate. THE CAT slept on the mat in Paris, paris."
SPLIT = (
    "Zyxwvutsrq and Qrstuvwxyz met Abracadabrazzle near Kxqjzwvvv in Ulaanbaatar, then "
    "Xylophonicalisation began at 17:45 on 2023-11-05 with Pneumonoultramicroscopic "
    "dust everywhere around Wolfeschlegelsteinhausen."
)

LONG_QUESTION = "Which castles can tourists visit on the Middle Rhine?"
NPDISTIL_PARAMS = {"long question": {"top_k": 3}}  # cases where npdistil is called otherwise

# (name, question, context, parameters): each becomes qa(question=..., context=..., **params).
CASES: list[tuple[str, Any, Any, dict[str, Any]]] = [
    ("short", "Who wrote it?", "Ada Lovelace wrote it in 1843.", {}),
    ("short top_k 2", "Who wrote it?", "Ada Lovelace wrote it in 1843.", {"top_k": 2}),
    (
        "accents",
        "Où habite Zoë?",
        "Zoë habite à Montréal depuis 2010, près du café Olé à Besançon.",
        {"top_k": 3},
    ),
    (
        "numbers",
        "How much did it cost?",
        "The ticket cost 12.50 dollars, or 3,000 yen, on 2024-05-01 at 09:30.",
        {"top_k": 3},
    ),
    ("cjk", "東京はどこ?", "東京は日本の首都です。 Tokyo is the capital of Japan.", {"top_k": 3}),
    ("emoji", "What did she send?", "She sent 🎉 and 😀 to Bob 👍 yesterday.", {"top_k": 3}),
    ("long, default windows", "Where does the Rhine rise?", LONG, {}),
    ("long top_k 5", "Which cities does it pass?", LONG, {"top_k": 5}),
    ("long doc_stride 5", "When was the Congress of Vienna?", LONG, {"doc_stride": 5, "top_k": 3}),
    (
        "long max_seq_len 28 doc_stride 6",
        "What do barges carry?",
        LONG,
        {"max_seq_len": 28, "doc_stride": 6, "top_k": 4},
    ),
    (
        "long impossible",
        "Where does the Rhine rise?",
        LONG,
        {"handle_impossible_answer": True, "top_k": 3},
    ),
    ("short impossible", "Who?", "Ada wrote it.", {"handle_impossible_answer": True}),
    (
        "short impossible top_k 4",
        "Who?",
        "Ada wrote it.",
        {"handle_impossible_answer": True, "top_k": 4},
    ),
    # "No." has 3 spans: "no answer" wins for the BERT, comes third for the DistilBERT.
    ("no answer", "Where does the Rhine rise?", "No.", {"handle_impossible_answer": True}),
    (
        "no answer top_k 4",
        "Where does the Rhine rise?",
        "No.",
        {"handle_impossible_answer": True, "top_k": 4},
    ),
    ("max_answer_len 1", "Which river?", LONG, {"max_answer_len": 1, "top_k": 3}),
    ("max_answer_len 3", "Which river?", LONG, {"max_answer_len": 3, "top_k": 3}),
    (
        "max_answer_len 40",
        "Who wrote it?",
        "Ada Lovelace wrote it in 1843.",
        {"max_answer_len": 40},
    ),
    ("repeated phrases merge", "Who sat?", REPEATED, {"top_k": 5}),
    ("words split across windows", "Who met whom?", SPLIT, {"doc_stride": 3, "top_k": 4}),
    ("not aligned to words", "Who met whom?", SPLIT, {"align_to_words": False, "top_k": 4}),
    (
        "batch of pairs",
        ["Who wrote it?", "Où habite Zoë?", "Where does the Rhine rise?"],
        ["Ada Lovelace wrote it in 1843.", "Zoë habite à Montréal depuis 2010.", LONG],
        {"top_k": 2},
    ),
    # The default doc_stride (20 here) leaves no progress beside this 24-token question:
    # npdistil's default shrinks to fit (12), where the pipeline's tokenizer panics, so the
    # pipeline is called with doc_stride 12 and npdistil with the default ("npdistil_params").
    ("long question", LONG_QUESTION, LONG, {"doc_stride": 12, "top_k": 3}),
    (
        "questions sharing a context",
        ["Where does the Rhine rise?", "How long is it?"],
        LONG,
        {},
    ),
]


def n_windows(qa: Any, question: str, context: str, params: dict[str, Any]) -> int:
    """How many windows the pipeline runs for one pair (its preprocess yields one per window)."""
    preprocess = {k: params[k] for k in ("doc_stride", "max_seq_len") if k in params}
    return sum(1 for _ in qa.preprocess({"question": question, "context": context}, **preprocess))


def call_text(question: Any, context: Any, params: dict[str, Any]) -> str:
    args = [f"question={question!r}", f"context={context!r}"]
    args += [f"{k}={v!r}" for k, v in params.items()]
    return f"qa({', '.join(args)})"


def main() -> None:
    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    out: dict[str, Any] = {
        "made_by": "scripts/make_reference_answer.py",
        "versions": versions(),
        "pipeline": 'qa = transformers.pipeline("question-answering", model=<folder>)',
        "defaults": {
            "top_k": 1,
            "max_answer_len": 15,
            "max_seq_len": "min(tokenizer.model_max_length, 384): 40 here",
            "doc_stride": "min(max_seq_len // 2, 128)",
            "handle_impossible_answer": False,
            "align_to_words": True,
        },
        "checkpoints": {},
    }
    for name in CHECKPOINTS:
        folder = FIXTURES / name
        qa = pipeline("question-answering", model=str(folder), device="cpu")
        n_question = len(qa.tokenizer(LONG_QUESTION, add_special_tokens=False)["input_ids"])
        assert 40 - 3 - n_question == 13, "the long question no longer gives 13-token windows"
        cases = []
        for title, question, context, params in CASES:
            questions = question if isinstance(question, list) else [question]
            contexts = context if isinstance(context, list) else [context] * len(questions)
            pairs = list(zip(questions, contexts, strict=True))
            cases.append(
                {
                    "name": title,
                    "question": question,
                    "context": context,
                    "params": params,
                    "call": call_text(question, context, params),
                    "npdistil_params": NPDISTIL_PARAMS.get(title, params),
                    "windows": [n_windows(qa, q, c, params) for q, c in pairs],
                    "output": qa(question=question, context=context, **params),
                }
            )
            print(f"{name}: {title}: windows {cases[-1]['windows']}")
        out["checkpoints"][name] = {"model_class": type(qa.model).__name__, "cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

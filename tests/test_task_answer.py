"""model.answer against transformers' question-answering pipeline, and its errors.

The expected answers are the pipeline's own, stored by scripts/make_reference_answer.py in
tests/fixtures/tasks/answer.json (transformers 4.57.1: transformers 5 has no such pipeline).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES

import npdistil
from npdistil.errors import InputError, InputTypeError, NpdistilError
from npdistil.text.tokenizer import overflow_windows

REFERENCE = json.loads((FIXTURES / "tasks" / "answer.json").read_text(encoding="utf-8"))
CHECKPOINTS = list(REFERENCE["checkpoints"])  # tiny-qa (DistilBERT), tiny-bert-qa (BERT)
SCORE_LIMIT = 1e-5


@pytest.fixture(scope="module", params=CHECKPOINTS)
def qa(request: pytest.FixtureRequest) -> tuple[str, npdistil.DistilBert]:
    return request.param, npdistil.load(FIXTURES / request.param)


def shape(result: Any) -> Any:
    """The nesting of a result: "answer" for a dict, a list of the shapes of a list's items."""
    return [shape(r) for r in result] if isinstance(result, list) else "answer"


def flat(result: Any) -> list[dict[str, Any]]:
    return [a for r in result for a in flat(r)] if isinstance(result, list) else [result]


def test_reference_covers_what_it_should() -> None:
    """The stored cases run in several windows, ask for several answers and for "no answer"."""
    for name in CHECKPOINTS:
        cases = REFERENCE["checkpoints"][name]["cases"]
        assert max(max(c["windows"]) for c in cases) > 10
        assert any(c["params"].get("handle_impossible_answer") for c in cases)
        assert any(a["answer"] == "" for c in cases for a in flat(c["output"]))
        assert any(c["params"].get("top_k", 1) > 1 for c in cases)
    outputs = [c["output"] for n in CHECKPOINTS for c in REFERENCE["checkpoints"][n]["cases"]]
    assert any(isinstance(o, dict) and o["answer"] == "" for o in outputs)  # "no answer" wins
    assert REFERENCE["versions"]["transformers"].startswith("4.")


def test_answers_as_the_pipeline(qa: tuple[str, npdistil.DistilBert], parity) -> None:
    """Same answers, character offsets and nesting as the pipeline for every stored call;
    scores within 1e-5."""
    name, model = qa
    ours_all, theirs_all, wrong = [], [], []
    for case in REFERENCE["checkpoints"][name]["cases"]:
        got = model.answer(case["question"], case["context"], **case["npdistil_params"])
        want = case["output"]
        if shape(got) != shape(want):
            wrong.append(f"{case['name']}: nesting {shape(got)} != {shape(want)}")
            continue
        ours, theirs = flat(got), flat(want)
        if [list(a) for a in ours] != [list(a) for a in theirs]:
            wrong.append(f"{case['name']}: keys {[list(a) for a in ours]}")
        strip = [[(a["answer"], a["start"], a["end"]) for a in x] for x in (ours, theirs)]
        if strip[0] != strip[1]:
            wrong.append(f"{case['name']}: {strip[0]} != pipeline's {strip[1]}")
            continue
        scores = np.array([[a["score"], b["score"]] for a, b in zip(ours, theirs, strict=True)])
        err = float(np.max(np.abs(scores[:, 0] - scores[:, 1])))
        print(f"{name} {case['name']}: {len(ours)} answer(s), max score difference {err:.2g}")
        ours_all.append(scores[:, 0])
        theirs_all.append(scores[:, 1])
    assert not wrong, "\n".join(wrong)
    parity(
        f"{name} answer scores vs QA pipeline",
        np.concatenate(ours_all),
        np.concatenate(theirs_all),
        SCORE_LIMIT,
    )


def test_windows_as_the_pipeline(qa: tuple[str, npdistil.DistilBert]) -> None:
    """The contexts are cut into as many windows as the pipeline cut them into."""
    name, model = qa
    tok = model.tokenizer
    for case in REFERENCE["checkpoints"][name]["cases"]:
        params = case["params"]
        questions = case["question"] if isinstance(case["question"], list) else [case["question"]]
        contexts = case["context"] if isinstance(case["context"], list) else [case["context"]]
        contexts = contexts * (len(questions) // len(contexts))
        max_seq_len = params.get("max_seq_len", 40)
        stride = params.get("doc_stride", max_seq_len // 2)
        for q, c, n in zip(questions, contexts, case["windows"], strict=True):
            room = max_seq_len - tok.n_special_pair - len(tok.tokenize(q)[0].ids)
            windows = overflow_windows(len(tok.tokenize(c)[0].ids), room, stride)
            assert len(windows) == n, case["name"]


# ---- output shapes ------------------------------------------------------------------------------


def test_shapes(qa: tuple[str, npdistil.DistilBert]) -> None:
    _, model = qa
    context = "Ada Lovelace wrote the first program in 1843."
    one = model.answer("Who?", context)
    assert isinstance(one, dict) and list(one) == ["score", "start", "end", "answer"]
    assert context[one["start"] : one["end"]] == one["answer"]
    assert isinstance(one["score"], float) and isinstance(one["start"], int)
    top = model.answer("Who?", context, top_k=3)
    assert isinstance(top, list) and len(top) == 3
    assert [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)
    # A list in gives a list out, even of one (the pipeline gives a dict for one pair).
    assert shape(model.answer(["Who?"], [context])) == ["answer"]
    assert shape(model.answer(["Who?", "When?"], context, top_k=2)) == [["answer"] * 2] * 2
    assert shape(model.answer("Who?", [context, context])) == ["answer", "answer"]
    # top_k > 1 always gives a list, even when fewer answers exist (the pipeline: a dict).
    assert shape(model.answer("Who?", "Ada", top_k=5, max_answer_len=1)) == ["answer"]


def test_batching_changes_nothing(qa: tuple[str, npdistil.DistilBert]) -> None:
    _, model = qa
    case = REFERENCE["checkpoints"][qa[0]]["cases"][-1]  # two questions, many windows
    a = model.answer(case["question"], case["context"], top_k=3)
    b = model.answer(case["question"], case["context"], top_k=3, batch_size=1)
    for x, y in zip(flat(a), flat(b), strict=True):
        assert (x["answer"], x["start"], x["end"]) == (y["answer"], y["start"], y["end"])
        assert abs(x["score"] - y["score"]) < 1e-6


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "context", "options", "message"),
    [
        ("", "Some context.", {}, "question 0 is empty"),
        (["Who?", ""], "Some context.", {}, "question 1 is empty"),
        ("Who?", ["Some context.", ""], {}, "context 1 is empty"),
        ("Who?", "   ", {}, "context 0 has no tokens"),
        ("Who?", ["Fine.", "Bad \udc80"], {}, "context 1 is not valid Unicode"),
        ([], "Some context.", {}, "no questions given"),
        (["Who?", "What?"], ["a", "b", "c"], {}, "2 questions but 3 contexts"),
        (["Who?", "word " * 40], "Some context.", {}, "question 1 has .* tokens"),
        ("Who?", "Some context.", {"top_k": 0}, "top_k must be a positive integer"),
        ("Who?", "Some context.", {"top_k": 1.5}, "top_k must be a positive integer"),
        ("Who?", "Some context.", {"max_answer_len": 0}, "max_answer_len must be a positive"),
        ("Who?", "Some context.", {"batch_size": 0}, "batch_size must be a positive"),
        ("Who?", "Some context.", {"max_seq_len": 41}, r"max_seq_len must be .* \[4, 40\]"),
        ("Who?", "Some context.", {"doc_stride": 41}, r"doc_stride must be .* \[0, 40\]"),
        ("Who?", "Some context.", {"doc_stride": -1}, r"doc_stride must be"),
        # the pipeline's tokenizer panics here; npdistil names the question
        ("Who?", "word " * 80, {"doc_stride": 36}, "doc_stride 36 .* question 0"),
    ],
)
def test_input_errors(
    qa: tuple[str, npdistil.DistilBert],
    question: Any,
    context: Any,
    options: dict[str, Any],
    message: str,
) -> None:
    _, model = qa
    with pytest.raises(InputError, match=message):
        model.answer(question, context, **options)


def test_type_errors(qa: tuple[str, npdistil.DistilBert]) -> None:
    _, model = qa
    with pytest.raises(InputTypeError, match="question 1 is a int"):
        model.answer(["Who?", 3], "Some context.")
    with pytest.raises(InputTypeError, match="contexts must be a str or an iterable of str"):
        model.answer("Who?", None)


def test_needs_a_question_answering_head() -> None:
    model = npdistil.load(FIXTURES / "tiny")
    with pytest.raises(NpdistilError, match="no question_answering head"):
        model.answer("Who?", "Ada wrote it.")

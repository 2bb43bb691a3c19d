"""fill_mask, classify and multiple_choice against transformers' pipelines.

The references in tests/fixtures/tasks/ are made by scripts/make_reference_tasks.py with
transformers' own pipelines on the tiny task checkpoints (random weights: the predictions mean
nothing, but every token, label and score must be the pipeline's).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES

import npdistil
from npdistil.errors import InputError, NpdistilError

SCORE_LIMIT = 1e-5  # probabilities, as the pipelines' scores
LOGIT_LIMIT = 1e-4  # raw logits, as every hidden state and head output in test_parity.py


def reference(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "tasks" / f"{name}.json").read_text(encoding="utf-8"))


def compare(
    parity: Any,
    name: str,
    ours: list[Any],
    theirs: list[Any],
    keys: tuple[str, ...],
    limit: float = SCORE_LIMIT,
) -> None:
    """Same results in the same order, keys equal except scores, scores within the bound."""
    ours_flat, theirs_flat = _flat(ours), _flat(theirs)
    assert len(ours_flat) == len(theirs_flat), name
    for a, b in zip(ours_flat, theirs_flat, strict=True):
        assert sorted(a) == sorted(b), f"{name}: keys {sorted(a)} != {sorted(b)}"
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}, name
    parity(
        name,
        np.array([a["score"] for a in ours_flat]),
        np.array([b["score"] for b in theirs_flat]),
        limit,
    )


def _flat(results: Any) -> list[dict[str, Any]]:
    if isinstance(results, dict):
        return [results]
    return [d for r in results for d in _flat(r)]


# ---- fill-mask --------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["tiny-mlm", "tiny-bert-mlm"])
def test_fill_mask_equals_the_pipeline(folder: str, parity: Any) -> None:
    ref = reference("fill_mask")["models"][folder]
    model = npdistil.load(FIXTURES / folder)
    for run in ref["runs"]:
        kwargs = run["kwargs"]
        with _warns_of_targets(kwargs):
            ours = model.fill_mask(ref["texts"], **kwargs)
        assert len(ours) == len(ref["texts"])
        compare(
            parity,
            f"{folder} fill_mask {kwargs}",
            ours,
            run["results"],
            ("token", "token_str", "sequence"),
        )
        # One text at a time gives each text's result: the same shapes as the pipeline's.
        with _warns_of_targets(kwargs):
            one = model.fill_mask(ref["texts"][3], **kwargs)
        assert len(one) == 2 and isinstance(one[0], list)  # two masks: a list per mask
        assert [d["token"] for d in _flat(one)] == [d["token"] for d in _flat(run["results"][3])]


def _warns_of_targets(kwargs: dict[str, Any]) -> Any:
    """A target that is not one token is replaced by its first piece, with a warning."""
    if "targets" in kwargs:
        return pytest.warns(UserWarning, match="first piece")
    return contextlib.nullcontext()


def test_fill_mask_refuses_what_it_cannot_fill() -> None:
    model = npdistil.load(FIXTURES / "tiny-mlm")
    with pytest.raises(InputError, match="text 1 has no \\[MASK\\]"):
        model.fill_mask(["a [MASK]", "no mask here"])
    with pytest.raises(InputError, match="top_k"):
        model.fill_mask("a [MASK]", top_k=0)
    with pytest.raises(InputError, match="targets is empty"):
        model.fill_mask("a [MASK]", targets=[])
    with pytest.raises(NpdistilError, match="no masked_lm head"):
        npdistil.load(FIXTURES / "tiny").fill_mask("a [MASK]")
    too_far = "text 0 has no \\[MASK\\] \\(in what fits the model\\)"
    with pytest.raises(InputError, match=too_far), pytest.warns(UserWarning, match="truncated"):
        model.fill_mask("word " * 60 + "[MASK]")


def test_tokenizer_helpers_equal_transformers() -> None:
    """The decoded strings of the reference come from transformers' tokenizer: ours agree."""
    ref = reference("fill_mask")["models"]["tiny-mlm"]
    tok = npdistil.load(FIXTURES / "tiny-mlm").tokenizer
    assert tok.mask_token == "[MASK]" and tok.convert_ids_to_tokens(tok.mask_token_id) == "[MASK]"
    for d in _flat(ref["runs"][0]["results"]):
        assert tok.decode([d["token"]]) == d["token_str"]
        assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(d["token"])) == d["token"]


# ---- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["tiny-seqcls", "tiny-bert-seqcls"])
def test_classify_equals_the_pipeline(folder: str, parity: Any) -> None:
    ref = reference("classify")["models"][folder]
    model = npdistil.load(FIXTURES / folder)
    for run in ref["runs"]:
        kwargs = run["kwargs"]
        ours = model.classify(ref["texts"], **kwargs)
        # Raw logits ("none") are held to the logits' bound; probabilities to the scores'.
        limit = LOGIT_LIMIT if kwargs.get("function_to_apply") == "none" else SCORE_LIMIT
        compare(parity, f"{folder} classify {kwargs}", ours, run["results"], ("label",), limit)
        alone = model.classify(ref["texts"][0], **kwargs)  # one text: its own list
        assert [d["label"] for d in alone] == [d["label"] for d in ours[0]]
        # The same numbers as in the batch, to float32 rounding (a product's rounding in BLAS
        # may depend on how many rows it has).
        assert np.allclose([d["score"] for d in alone], [d["score"] for d in ours[0]], atol=1e-6)
    firsts, seconds = zip(*ref["pairs"], strict=True)
    ours = model.classify(list(firsts), list(seconds), top_k=None)
    compare(parity, f"{folder} classify pairs", ours, ref["pair_results"], ("label",))


def test_classify_scores_follow_the_problem_type(tmp_path: Path) -> None:
    """A multi-label config scores with a sigmoid by default: the pipeline's sigmoid figures."""
    ref = reference("classify")["models"]["tiny-seqcls"]
    (sigmoid_run,) = [r for r in ref["runs"] if r["kwargs"].get("function_to_apply") == "sigmoid"]
    folder = tmp_path / "multi-label"
    shutil.copytree(FIXTURES / "tiny-seqcls", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps(config | {"problem_type": "multi_label_classification"})
    )
    model = npdistil.load(folder)
    ours = model.classify(ref["texts"], top_k=2)
    for a, b in zip(_flat(ours), _flat(sigmoid_run["results"]), strict=True):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= SCORE_LIMIT
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}


def test_classify_refuses_bad_options() -> None:
    model = npdistil.load(FIXTURES / "tiny-seqcls")
    with pytest.raises(InputError, match="function_to_apply"):
        model.classify("x", function_to_apply="tanh")
    with pytest.raises(InputError, match="top_k"):
        model.classify("x", top_k=0)
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        model.classify(["a", "b"], ["c"])
    with pytest.raises(NpdistilError, match="no sequence_classification head"):
        npdistil.load(FIXTURES / "tiny").classify("x")


def test_a_bad_problem_type_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(FIXTURES / "tiny-seqcls", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"problem_type": "ranking"}))
    with pytest.raises(npdistil.ConfigError, match="problem_type 'ranking'"):
        npdistil.load(folder)


# ---- multiple choice ---------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["tiny-mc", "tiny-bert-mc"])
def test_multiple_choice_equals_transformers(folder: str, parity: Any) -> None:
    ref = reference("multiple_choice")["models"][folder]
    model = npdistil.load(FIXTURES / folder)
    assert model.task_heads == ("multiple_choice",)
    for (prompt, choices), expected in zip(ref["questions"], ref["results"], strict=True):
        ours = model.multiple_choice(prompt, choices)
        assert sorted(c["index"] for c in ours) == list(range(len(choices)))
        assert [c["choice"] for c in ours] == [choices[c["index"]] for c in ours]
        scores = np.zeros(len(choices))
        scores[[c["index"] for c in ours]] = [c["score"] for c in ours]
        parity(f"{folder} multiple_choice {prompt!r}", scores, np.array(expected["scores"]), 1e-5)
        assert [c["index"] for c in ours] == list(np.argsort(expected["scores"])[::-1])


def test_multiple_choice_refuses_one_string() -> None:
    model = npdistil.load(FIXTURES / "tiny-mc")
    with pytest.raises(InputError, match="list of texts"):
        model.multiple_choice("prompt", "one choice")  # type: ignore[arg-type]


# ---- the command line --------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    from npdistil import cli

    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def test_cli_fill_mask_prints_the_pipeline_results(capsys: pytest.CaptureFixture[str]) -> None:
    ref = reference("fill_mask")["models"]["tiny-mlm"]
    (run,) = [r for r in ref["runs"] if r["kwargs"] == {"top_k": 2}]
    folder = str(FIXTURES / "tiny-mlm")
    status, records, _ = run_cli(
        capsys, "fill-mask", "--model", folder, "--top-k", "2", *ref["texts"]
    )
    assert status == 0
    assert [r["id"] for r in records] == list(range(1, len(ref["texts"]) + 1))
    for record, expected in zip(records, run["results"], strict=True):
        for a, b in zip(_flat(record["result"]), _flat(expected), strict=True):
            assert a["token"] == b["token"] and a["sequence"] == b["sequence"]
            assert abs(a["score"] - b["score"]) <= SCORE_LIMIT


def test_cli_classify_reads_pairs_from_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = reference("classify")["models"]["tiny-bert-seqcls"]
    source = tmp_path / "pairs.jsonl"
    lines = [
        json.dumps({"id": f"p{i}", "premise": a, "hypothesis": b})
        for i, (a, b) in enumerate(ref["pairs"])
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "labels.jsonl"
    args = ["--input", str(source), "--field", "premise", "--pair-field", "hypothesis"]
    status, _, err = run_cli(
        capsys,
        "classify",
        "--model",
        str(FIXTURES / "tiny-bert-seqcls"),
        *args,
        "--top-k",
        "all",
        "--output",
        str(target),
    )
    assert status == 0 and f"wrote 3 result(s) to {target}" in err
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    for record, expected in zip(records, ref["pair_results"], strict=True):
        assert [d["label"] for d in record["result"]] == [d["label"] for d in expected]
        scores = [d["score"] for d in record["result"]]
        assert np.allclose(scores, [d["score"] for d in expected], atol=SCORE_LIMIT, rtol=0)


def test_cli_task_errors_name_the_text(capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(FIXTURES / "tiny-mlm")
    status, _, err = run_cli(capsys, "fill-mask", "--model", folder, "a [MASK]", "no mask")
    assert status == 1 and "argument 2 has no [MASK]" in err
    status, _, err = run_cli(capsys, "classify", "--model", folder, "--pair-field", "b", "text")
    assert status == 2 and "--pair-field applies to .jsonl input" in err
    status, _, err = run_cli(capsys, "classify", "--model", folder, "text")
    assert status == 1 and "no sequence_classification head" in err


def test_cli_entities_prints_the_pipeline_groups(capsys: pytest.CaptureFixture[str]) -> None:
    ref = reference("entities")
    (case,) = [
        c
        for c in ref["cases"]
        if c["checkpoint"] == "tiny-bert-tokcls"
        and c["kwargs"] == {"aggregation_strategy": "first"}
    ]
    texts = [t for t in ref["texts"] if t][:4]  # arguments can't be empty texts
    folder = str(FIXTURES / "tiny-bert-tokcls")
    argv = ["entities", "--model", folder, "--aggregation-strategy", "first", *texts]
    status, records, _ = run_cli(capsys, *argv)
    assert status == 0
    by_text = dict(zip(ref["texts"], case["results"], strict=True))
    for record, text in zip(records, texts, strict=True):
        expected = by_text[text]
        assert [(e["entity_group"], e["start"], e["end"]) for e in record["result"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in expected
        ]
        for a, b in zip(record["result"], expected, strict=True):
            assert abs(a["score"] - b["score"]) <= 5e-5  # the entity tests' bound


def test_cli_answer_takes_questions_from_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = reference("answer")["checkpoints"]["tiny-qa"]["cases"]
    plain = [c for c in cases if c["npdistil_params"] in ({}, {"top_k": 2})][:2]
    source = tmp_path / "qa.jsonl"
    lines = [json.dumps({"question": c["question"], "context": c["context"]}) for c in plain]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for case in plain:
        top_k = str(case["npdistil_params"].get("top_k", 1))
        argv = ["answer", "--model", str(FIXTURES / "tiny-qa"), "--input", str(source)]
        status, records, _ = run_cli(capsys, *argv, "--field", "context", "--top-k", top_k)
        assert status == 0
        got = records[plain.index(case)]["result"]
        for a, b in zip(_flat(got), _flat(case["output"]), strict=True):
            assert (a["answer"], a["start"], a["end"]) == (b["answer"], b["start"], b["end"])
            assert abs(a["score"] - b["score"]) <= SCORE_LIMIT
    status, _, err = run_cli(capsys, "answer", "--model", str(FIXTURES / "tiny-qa"), "context")
    assert status == 2 and "give the question" in err


# ---- tokenizer helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-mlm", "all-MiniLM-L6-v2"])
def test_tokenizer_helpers_equal_transformers_tokenizers(name: str, minilm_folder: Path) -> None:
    """decode, convert_ids_to_tokens and the special tokens, on the tiny cased vocabulary and
    the real uncased one of all-MiniLM-L6-v2, as transformers' tokenizer gives them."""
    ref = reference("tokenizer")["models"][name]
    folder = FIXTURES / name if name == "tiny-mlm" else minilm_folder
    tok = npdistil.load(folder).tokenizer
    assert (tok.mask_token, tok.mask_token_id, tok.unk_token) == (
        ref["mask_token"],
        ref["mask_token_id"],
        ref["unk_token"],
    )
    assert tok.all_special_ids == ref["all_special_ids"]
    for row in ref["rows"]:
        ids = tok([row["text"]]).input_ids[0]
        assert ids.tolist() == row["ids"], row["text"]
        assert tok.convert_ids_to_tokens(ids) == row["tokens"]
        assert tok.convert_tokens_to_ids(row["tokens"]) == row["ids"]
        assert tok.decode(ids) == row["decode"]
        assert tok.decode(ids, skip_special_tokens=True) == row["decode_skip_special"]
        assert [tok.decode([i]) for i in ids] == row["decode_each"]

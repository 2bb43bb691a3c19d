"""``model.entities``: against transformers' token-classification pipeline itself
(tests/fixtures/tasks/entities.json, made by scripts/make_reference_entities.py).

Every pipeline call stored there is replayed on the same checkpoint (tiny-tokcls, a DistilBERT,
and tiny-bert-tokcls, a BERT) and texts: tags, groups, words and offsets must be the same, and
scores as close as the two forward passes' float32 rounding allows.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import FIXTURES

import npdistil
from npdistil.errors import InputError, InputTypeError, NpdistilError

REF = json.loads((FIXTURES / "tasks" / "entities.json").read_text(encoding="utf-8"))
TEXTS: list[str] = REF["texts"]
CASES = REF["cases"]

# Scores are probabilities from the two forward passes' logits, which the parity tests hold
# to 1e-4; a softmax moves a probability by at most half its logits' error, so 5e-5 is the
# bound those logits allow. Measured: <= 3e-6 on tiny-bert-tokcls; on tiny-tokcls, whose random
# weights amplify float32 rounding the most (see test_reference.py), the numbers text has
# logits 8.5e-5 apart (transformers 5e-5 from the float64 reference, npdistil 3.5e-5, on
# either side) and probabilities up to 1.5e-5 apart; every other text stays below 1e-5.
SCORE_TOLERANCE = 5e-5
GROUP_KEYS = ["entity_group", "score", "word", "start", "end"]
TOKEN_KEYS = ["entity", "score", "index", "word", "start", "end"]


def _case_id(case: dict) -> str:
    kwargs = ",".join(f"{k}={v}" for k, v in case["kwargs"].items())
    return f"{case['checkpoint']}:{kwargs}"


def _load(name: str) -> npdistil.DistilBert:
    return npdistil.load(FIXTURES / name)


def _entities(model: npdistil.DistilBert, texts, **kwargs):  # type: ignore[no-untyped-def]
    """model.entities, without the warning the long text gives when it is truncated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*truncated", category=UserWarning)
        return model.entities(texts, **kwargs)


def _same_entities(got: list[list[dict]], expected: list[list[dict]], where: str) -> np.ndarray:
    """Assert every entity but its score equal (keys in the pipeline's order); return the scores
    side by side, [n, 2]."""
    assert len(got) == len(expected), where
    scores = []
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert len(g) == len(e), f"{where}, text {i}: {len(g)} entities, pipeline {len(e)}"
        for k, (a, b) in enumerate(zip(g, e, strict=True)):
            assert list(a) == list(b), f"{where}, text {i}, entity {k}: keys {list(a)}"
            assert list(a) in (GROUP_KEYS, TOKEN_KEYS)
            assert type(a["score"]) is float and type(a["start"]) is int, a
            rest = {key: v for key, v in a.items() if key != "score"}
            assert rest == {key: v for key, v in b.items() if key != "score"}, (
                f"{where}, text {i}, entity {k}: {a} != pipeline {b}"
            )
            scores.append((a["score"], b["score"]))
    return np.array(scores, dtype=np.float64).reshape(-1, 2)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_entities_match_the_pipeline(case, parity):
    model = _load(case["checkpoint"])
    got = _entities(model, TEXTS, **case["kwargs"])
    scores = _same_entities(got, case["results"], _case_id(case))
    assert len(scores) > 0
    parity(f"entities {_case_id(case)} scores", scores[:, 0], scores[:, 1], SCORE_TOLERANCE)


def test_every_strategy_and_both_checkpoints_are_in_the_reference():
    seen = {(c["checkpoint"], c["kwargs"]["aggregation_strategy"]) for c in CASES}
    strategies = {"none", "simple", "first", "average", "max"}
    assert seen == {(n, s) for n in ("tiny-tokcls", "tiny-bert-tokcls") for s in strategies}
    assert any("stride" in c["kwargs"] for c in CASES)
    bert = npdistil.load(FIXTURES / "tiny-bert-tokcls")
    assert bert.config.model_type == "bert"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_changes_nothing(batch_size, parity):
    """The windows of all texts (four from the long one) split into batches differently."""
    case = next(c for c in CASES if c["kwargs"] == {"aggregation_strategy": "first", "stride": 8})
    model = _load(case["checkpoint"])
    got = _entities(model, TEXTS, batch_size=batch_size, **case["kwargs"])
    scores = _same_entities(got, case["results"], f"batch_size={batch_size}")
    parity(f"entities batch_size={batch_size} scores", scores[:, 0], scores[:, 1], SCORE_TOLERANCE)


def test_one_text_gives_one_list_and_many_texts_a_list_each():
    case = next(c for c in CASES if c["checkpoint"] == "tiny-bert-tokcls" and len(c["kwargs"]) == 1)
    model = _load("tiny-bert-tokcls")
    strategy = case["kwargs"]["aggregation_strategy"]
    one = model.entities(TEXTS[1], aggregation_strategy=strategy)
    assert isinstance(one, list) and all(isinstance(e, dict) for e in one)
    _same_entities([one], [case["results"][1]], "one str")
    pair = model.entities((t for t in TEXTS[:2]), aggregation_strategy=strategy)  # any iterable
    assert len(pair) == 2 and all(isinstance(r, list) for r in pair)
    _same_entities(pair, case["results"][:2], "a generator of two texts")
    assert model.entities([""]) == [[]] and model.entities("") == []


def test_a_long_text_is_truncated_with_a_warning_unless_a_stride_is_given():
    model = _load("tiny-tokcls")
    with pytest.warns(UserWarning, match=r"1 text\(s\) longer than 40 tokens.*text 1.*stride"):
        truncated = model.entities(["Hello world!", TEXTS[-1]])
    assert max(e["end"] for e in truncated[1]) < len(TEXTS[-1]) // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the whole text is tagged
        whole = model.entities(TEXTS[-1], stride=8)
    assert max(e["end"] for e in whole) == len(TEXTS[-1])


def test_a_checkpoint_without_a_token_classification_head_is_refused_naming_its_file():
    model = _load("tiny-seqcls")
    with pytest.raises(NpdistilError, match=r"no token_classification head") as err:
        model.entities("Hello world!")
    assert str(model.path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"aggregation_strategy": "longest"}, InputError, "'none', 'simple', 'first', 'average'"),
        ({"aggregation_strategy": None}, InputError, "aggregation_strategy must be one of"),
        ({"stride": 8, "aggregation_strategy": "none"}, InputError, "stride"),
        ({"stride": 38}, InputError, r"stride must be an integer in \[0, 38\)"),
        ({"stride": -1}, InputError, "stride must be"),
        ({"batch_size": 0}, InputError, "batch_size must be a positive integer"),
        ({"ignore_labels": 3}, InputTypeError, "ignore_labels"),
    ],
)
def test_bad_options_are_refused_naming_the_option(kwargs, error, message):
    model = _load("tiny-tokcls")
    with pytest.raises(error, match=message):
        model.entities("Hello world!", **kwargs)


def test_bad_texts_are_refused_naming_the_text():
    model = _load("tiny-tokcls")
    with pytest.raises(InputTypeError, match="text 1 is a int"):
        model.entities(["Hello", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="no texts"):
        model.entities([])


def test_upper_case_strategy_names_and_one_ignored_label_as_a_str():
    case = next(
        c
        for c in CASES
        if c["checkpoint"] == "tiny-bert-tokcls" and c["kwargs"] == {"aggregation_strategy": "max"}
    )
    model = _load(case["checkpoint"])
    got = _entities(model, TEXTS, aggregation_strategy="MAX")  # type: ignore[arg-type]
    _same_entities(got, case["results"], "MAX")
    alone = _entities(model, TEXTS, aggregation_strategy="max", ignore_labels="O")
    _same_entities(alone, case["results"], 'ignore_labels="O" (one label, not its letters)')

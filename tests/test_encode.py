"""model.encode: sentence, token and word embeddings, long texts in windows, streams.

References: transformers' outputs for the fixture texts (tiny_reference.npz), and for windows an
independent computation that runs every window on its own.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, tiny_reference

import npdistil
from npdistil.cli import main
from npdistil.errors import InputError, TextTooLongError

META, REF = tiny_reference()
TEXTS = META["texts"]
HIDDEN, MASK = REF["tiny/last_hidden_state"], REF["tiny/attention_mask"].astype(bool)
WORD_IDS, OFFSETS = REF["tiny/word_ids"], REF["tiny/offsets"]
LONG = " ".join(TEXTS[4] for _ in range(6))  # ~260 word pieces with the tiny tokenizer


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return npdistil.load(FIXTURES / "tiny", cache_dir=tmp_path_factory.mktemp("cache"))


def _encode(model, texts, **kw):
    # Text 4 is longer than the tiny model's 40 positions: truncate it as the reference did.
    with pytest.warns(UserWarning, match="truncated"):
        return model.encode(texts, long_text="truncate", **kw)


# ---- against transformers' outputs ---------------------------------------------------------------


def test_sentence_mean_cls_max_match_pooling_of_transformers_outputs(model, parity):
    masked = [HIDDEN[i][MASK[i]] for i in range(len(TEXTS))]
    parity("encode mean", _encode(model, TEXTS), np.stack([m.mean(0) for m in masked]))
    parity("encode cls", _encode(model, TEXTS, pooling="cls"), HIDDEN[:, 0])
    parity("encode max", _encode(model, TEXTS, pooling="max"), np.stack([m.max(0) for m in masked]))
    unit = _encode(model, TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-6)
    assert unit.dtype == np.float32 and unit.shape == (5, 20)


def test_token_embeddings_match_transformers_rows_offsets_and_word_ids(model, parity):
    with_specials = _encode(model, TEXTS, output_value="tokens", include_special_tokens=True)
    for i, t in enumerate(with_specials):
        n = int(MASK[i].sum())
        parity(f"encode tokens text {i}", t.vectors, HIDDEN[i, :n])
        np.testing.assert_array_equal(t.offsets, OFFSETS[i, :n])
        np.testing.assert_array_equal(t.word_ids, WORD_IDS[i, :n])
        assert t.tokens[0] == "[CLS]" and t.tokens[-1] == "[SEP]" and len(t.tokens) == n
    without = _encode(model, TEXTS, output_value="tokens")
    for a, b in zip(without, with_specials, strict=True):
        np.testing.assert_array_equal(a.vectors, b.vectors[1:-1])
        assert a.tokens == b.tokens[1:-1]


@pytest.mark.parametrize("how", ["first", "mean", "max"])
def test_word_embeddings_aggregate_transformers_rows_per_word(model, how, parity):
    words = _encode(model, TEXTS, output_value="word_embeddings", word_pooling=how)
    for i, w in enumerate(words):
        ids = WORD_IDS[i]
        expected = []
        for word in sorted(set(ids[ids >= 0].tolist())):
            rows = HIDDEN[i][ids == word]
            expected.append({"first": rows[0], "mean": rows.mean(0), "max": rows.max(0)}[how])
        parity(f"encode words ({how}) text {i}", w.vectors, np.stack(expected))
        assert len(w.words) == len(expected)  # every word exactly one vector
        for word, (a, b) in zip(w.words, w.offsets.tolist(), strict=True):
            assert word == TEXTS[i][a:b] and word.strip() == word and word


def test_every_word_gets_one_vector_in_hard_texts(model):
    texts = ["Straße, Café — naïve résumé 🙂 東京都\tend…", "a\u200bb \u0301x  مرحبا بالعالم", " "]
    words = model.encode(texts, output_value="word_embeddings")
    for text, w in zip(texts, words, strict=True):
        pieces = model.tokenizer.tokenize(text)[0]
        assert len(w.words) == len(set(pieces.word_ids.tolist()))
        assert w.vectors.shape == (len(w.words), 20)
    assert words[2].vectors.shape == (0, 20)


# ---- batching ---------------------------------------------------------------------------------


def test_a_text_in_a_sorted_padded_batch_equals_the_text_alone(model):
    texts = [LONG[:50], "Hi", TEXTS[1], "", LONG[:120], "x" * 30]
    together = model.encode(texts, batch_size=4)
    for i, text in enumerate(texts):
        alone = model.encode([text])[0]
        assert np.abs(together[i] - alone).max() <= 1e-5
    tokens = model.encode(texts, output_value="tokens", batch_size=2)
    for i, text in enumerate(texts):
        alone = model.encode([text], output_value="tokens")[0]
        assert np.abs(tokens[i].vectors - alone.vectors).max(initial=0) <= 1e-5


def test_iter_encode_streams_chunks_in_order(model):
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(700)]
    chunks = list(model.iter_encode(iter(texts), chunk_size=128, batch_size=16))
    assert [len(c) for c in chunks] == [128] * 5 + [60]
    np.testing.assert_allclose(np.concatenate(chunks), model.encode(texts), atol=1e-5)


def test_iter_encode_names_a_bad_text_by_its_index_in_the_stream(model):
    with pytest.raises(npdistil.InputTypeError, match="text 130 is a int"):
        list(model.iter_encode(["ok"] * 130 + [5], chunk_size=64))


# ---- long texts ---------------------------------------------------------------------------------


def _independent_windows(model, text, window, stride):
    """Each token's vector from the window where it has the most context, by brute force:
    every window run on its own through the plain forward pass."""
    tok = model.tokenizer
    ids = tok.tokenize(text)[0].ids
    room, n = window - 2, len(ids)
    starts = []
    s = 0
    while s + room < n:
        starts.append(s)
        s += room - stride
    starts.append(n - room)
    outs = {}
    for s in starts:
        row = np.concatenate([[tok.prefix_ids[0]], ids[s : s + room], [tok.suffix_ids[0]]])
        outs[s] = model(row[None]).last_hidden_state[0]
    vectors = np.empty((n + 2, 20), np.float32)
    for p in range(n):
        best = max(starts, key=lambda s: (s <= p < s + room, min(p - s, s + room - 1 - p), -s))
        vectors[p + 1] = outs[best][p - best + 1]
    vectors[0], vectors[-1] = outs[starts[0]][0], outs[starts[-1]][-1]
    return vectors, len(starts)


@pytest.mark.parametrize(("window", "stride"), [(40, None), (40, 0), (40, 30), (16, 5)])
def test_long_text_windows_match_an_independent_computation(model, window, stride, parity):
    [tokens] = model.encode(
        [LONG],
        output_value="tokens",
        include_special_tokens=True,
        window=window,
        stride=stride,
    )
    expected, n_windows = _independent_windows(
        model, LONG, window, (window - 2) // 4 if stride is None else stride
    )
    assert n_windows > 3
    parity(f"windows {window}/{stride} vs independent", tokens.vectors, expected)
    full = model.tokenizer.tokenize(LONG)[0]
    assert tokens.tokens[1:-1] == full.tokens  # complete and in order
    np.testing.assert_array_equal(tokens.offsets[1:-1], full.offsets)
    [sentence] = model.encode([LONG], window=window, stride=stride)
    np.testing.assert_allclose(sentence, expected.mean(0), atol=1e-6)


def test_a_text_that_fits_one_window_is_the_single_pass_result(model):
    text = TEXTS[1]
    batch = model.tokenizer([text])
    single = model(batch.input_ids, batch.attention_mask).last_hidden_state[0]
    [tokens] = model.encode([text], output_value="tokens", include_special_tokens=True)
    np.testing.assert_array_equal(tokens.vectors, single)


def test_long_text_policies(model):
    with pytest.raises(TextTooLongError, match="text 1 has"):
        model.encode(["short", LONG], long_text="error")
    with pytest.warns(UserWarning, match="truncated"):
        [t] = model.encode([LONG], long_text="truncate", output_value="tokens")
    assert len(t.tokens) == 38


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pooling": "sum"}, "pooling must be one of"),
        ({"output_value": "vectors"}, "output_value must be one of"),
        ({"long_text": "split"}, "long_text must be one of"),
        ({"window": 41}, "larger than the model's 40 positions"),
        ({"stride": 38}, "stride must be in"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_options(model, options, message):
    with pytest.raises(InputError, match=message):
        model.encode(["hello"], **options)


# ---- the command line, streaming ---------------------------------------------------------------


def _embed_file(src: Path, out: Path, *options: str) -> int:
    """``npdistil embed`` with the tiny model from ``src`` to ``out``; the exit status."""
    return main(
        [
            "embed",
            "--model",
            str(FIXTURES / "tiny"),
            "--input",
            str(src),
            "--output",
            str(out),
            *options,
        ]
    )


def _corpus(path: Path, n: int) -> list[str]:
    words = TEXTS[4].split()
    texts = [" ".join(words[(i * 7) % 30 : (i * 7) % 30 + 1 + i % 13]) for i in range(n)]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts


def test_cli_streams_a_large_file_to_npy_in_input_order(model, tmp_path):
    texts = _corpus(tmp_path / "in.txt", 3000)
    out = tmp_path / "out.npy"
    assert _embed_file(tmp_path / "in.txt", out, "--chunk-size", "400", "--batch-size", "64") == 0
    got = np.load(out)
    assert got.shape == (3000, 20)
    picks = [0, 1, 399, 400, 401, 1777, 2999]
    np.testing.assert_allclose(got[picks], model.encode([texts[i] for i in picks]), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_jsonl_in_and_out_keeps_ids(model, tmp_path):
    records = [{"id": f"doc-{i}", "body": t} for i, t in enumerate(["Hello world!", "The", LONG])]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "out.jsonl"
    assert _embed_file(tmp_path / "in.jsonl", out, "--field", "body", "--output-value", "word") == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["doc-0", "doc-1", "doc-2"]
    assert lines[0]["words"] == ["Hello", "world", "!"]
    expected = model.encode([r["body"] for r in records], output_value="word_embeddings")
    np.testing.assert_allclose(np.array(lines[2]["vectors"]), expected[2].vectors, atol=1e-6)


def test_cli_npz_token_output(tmp_path):
    (tmp_path / "in.txt").write_text("Hello world!\nThe cat\n")
    out = tmp_path / "out.npz"
    assert _embed_file(tmp_path / "in.txt", out, "--output-value", "token") == 0
    z = np.load(out)
    assert z["vectors_1"].shape[1] == 20 and list(z["tokens_0"])[:2] == ["H", "##e"]


def test_cli_bad_input_leaves_no_output(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"text": "ok"}\n{"other": 1}\n')
    out = tmp_path / "out.npy"
    assert _embed_file(tmp_path / "in.jsonl", out, "--chunk-size", "1") == 1
    assert "in.jsonl:2: no string field 'text'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "npdistil-cache") == ["in.jsonl"]


def test_cli_prints_a_few_texts(capsys):
    assert main(["embed", "--model", str(FIXTURES / "tiny"), "Hello world!", "The"]) == 0
    out = capsys.readouterr().out
    assert "[1] 'Hello world!'" in out and "[2] 'The'" in out and "(20 dims" in out


def _peak_bytes(tmp_path: Path, n: int) -> int:
    _corpus(tmp_path / f"in{n}.txt", n)
    tracemalloc.start()
    _embed_file(tmp_path / f"in{n}.txt", tmp_path / f"out{n}.npy", "--chunk-size", "256")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_streaming_memory_stays_flat_as_the_input_grows(tmp_path):
    _peak_bytes(tmp_path, 100)  # warm-up: conversion and first-use allocations
    # Each size twice, keeping the lower peak: the interpreter grows some tables of its own
    # once in a while (a 1.9 MB one was seen, depending on how many modules the test run had
    # imported), which says nothing about the stream; memory held per line shows in every run.
    small = min(_peak_bytes(tmp_path, 1000) for _ in range(2))
    large = min(_peak_bytes(tmp_path, 10000) for _ in range(2))
    print(
        f"peak traced memory: {small / 1e6:.2f} MB for 1,000 lines, "
        f"{large / 1e6:.2f} MB for 10,000 lines"
    )
    assert large < 1.5 * small + 1e6


def test_sentence_embeddings_keep_only_pooled_vectors_while_running(model):
    """Each text's token vectors are pooled as soon as the text has run, so a call on many
    texts never holds every token vector of every text: when a batch runs, no earlier batch's
    hidden states are alive (texts of several windows excepted, until they are whole)."""
    import gc
    import weakref

    alive: list[weakref.ref[np.ndarray]] = []
    texts = ["Hello world!", "A class definition is an executable statement.", "The", "x y z"]

    def run(sequences: list[np.ndarray]) -> list[np.ndarray]:
        gc.collect()
        assert [r for r in alive if r() is not None] == [], "an earlier batch is still held"
        hidden = model.forward_packed(sequences)
        alive.extend(weakref.ref(h.base if h.base is not None else h) for h in hidden)
        return hidden

    tok = model.tokenizer
    pooled = npdistil.text.encode.encode(texts, tok, run, batch_size=1)
    assert len(alive) == len(texts)
    np.testing.assert_array_equal(pooled, model.encode(texts, batch_size=1))

"""Regenerate the reference fixtures in tests/fixtures/ with PyTorch and Hugging Face transformers.

The tests never import torch: they compare npdistil with the outputs this script stores. Run it
from the repository root, on Python 3.11 (the tokenizer is learned from the Python 3.11 copy of
`pydoc_data.topics`, whose text differs between Python releases):

    pip install -e ".[reference]"
    python scripts/make_reference.py

It rewrites, deterministically (fixed seeds, explicit tie-breaks):

- tests/fixtures/<folder>/ for folder in tiny, tiny-mlm, tiny-sinusoidal, tiny-seqcls, tiny-qa,
  tiny-tokcls: a cased WordPiece tokenizer (tokenizer.json, tokenizer_config.json, vocab.txt),
  config.json, model.safetensors (plus pytorch_model.bin for tiny and tiny-mlm). The models
  have odd sizes (dim 20, 4 heads of 5, FFN 37, 3 layers, 40 positions) so that a wrong
  transpose or reshape cannot pass, and weights re-drawn large enough that errors show.
- tests/fixtures/tiny_reference.npz + tiny_reference.json: one padded batch of texts per
  folder, as tokenized by transformers, with every hidden state, attention map and head output.
- tests/fixtures/full_size_reference.npz + full_size_reference.json: the full
  distilbert-base-cased architecture run on weights from tests/synthetic.py (NumPy only, so the
  tests can rebuild them), outputs subsampled to keep the file small.

Every array is float32 (outputs) or int64 (ids, masks, offsets, word ids; -1 stands for None).
No file needs pickle: open the npz files with `np.load(path, allow_pickle=False)`.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import (
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    DistilBertTokenizerFast,
    PreTrainedModel,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "tests"))
import synthetic  # noqa: E402  (tests/synthetic.py: NumPy only, shared with the tests)

# --------------------------------------------------------------------------- tokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
VOCAB_SIZE = 700
MIN_PAIR_FREQUENCY = 2
MAX_LENGTH = 40  # = max_position_embeddings of the tiny models: longer texts are truncated

# The reference batch: padded to the longest row, which is the truncated one (40 tokens).
TEXTS = [
    "Hello world!",
    "DistilBERT is cased: English != english.",
    "Straße, Café \u2014 na\u00efve r\u00e9sum\u00e9 \U0001f642 \u6771\u4eac\u90fd\tend\u2026",
    "The",  # [CLS] The [SEP]: a row that is mostly padding
    (
        "A class definition is an executable statement. The argument list usually evaluates to "
        "a class or classes that allow subclassing; each item in the list should evaluate to a "
        "class object, and the class's suite is then executed in a new execution frame."
    ),
]
SHORT_TEXT_INDEX = 3
LONG_TEXT_INDEX = 4


def corpus() -> list[str]:
    """The paragraphs of CPython's `pydoc_data.topics`, in a fixed order."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        out += [p.strip() for p in topics[key].split("\n\n") if p.strip()]
    return out


def bert_normalizer_and_pre_tokenizer() -> tuple[Any, Any]:
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    return normalizer, pre_tokenizers.BertPreTokenizer()


def learn_wordpiece_vocab(paragraphs: list[str], vocab_size: int) -> list[str]:
    """Learn a WordPiece vocabulary the way `tokenizers.trainers.WordPieceTrainer` does (BPE
    merges over words split by the BERT pre-tokenizer, continuations marked `##`), but with an
    explicit tie-break: the most frequent pair wins, equal counts go to the smaller (left, right)
    strings. WordPieceTrainer breaks ties in hash order, so it learns a different vocabulary on
    each run, and every fixture would change with it.
    """
    normalizer, pre_tokenizer = bert_normalizer_and_pre_tokenizer()
    word_counts: Counter[str] = Counter()
    for p in paragraphs:
        word_counts.update(
            w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(p))
        )

    words = sorted(word_counts)
    freqs = [word_counts[w] for w in words]
    symbols = [[w[0]] + ["##" + c for c in w[1:]] for w in words]
    initials = sorted({s[0] for s in symbols})
    continuations = sorted({t for s in symbols for t in s[1:]})
    vocab = list(SPECIAL_TOKENS) + initials + continuations
    known = set(vocab)

    pair_counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}

    def count(i: int, sign: int) -> None:
        s = symbols[i]
        for pair in zip(s, s[1:], strict=False):
            pair_counts[pair] += sign * freqs[i]
            if sign > 0:
                where.setdefault(pair, set()).add(i)

    for i in range(len(words)):
        count(i, +1)

    while len(vocab) < vocab_size:
        live = [(-n, pair) for pair, n in pair_counts.items() if n > 0]
        if not live:
            break
        neg_n, (left, right) = min(live)
        if -neg_n < MIN_PAIR_FREQUENCY:
            break
        merged = left + right[2:]
        for i in sorted(where.pop((left, right), ())):
            count(i, -1)
            s, out, j = symbols[i], [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == left and s[j + 1] == right:
                    out.append(merged)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            symbols[i] = out
            count(i, +1)
        del pair_counts[(left, right)]
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
    return vocab


def build_tokenizer() -> Tokenizer:
    """A cased BERT WordPiece tokenizer: BertNormalizer (no lowercasing, accents kept),
    BertPreTokenizer, WordPiece `##`, `[CLS] $A [SEP]`."""
    vocab = learn_wordpiece_vocab(corpus(), VOCAB_SIZE)
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer, tok.pre_tokenizer = bert_normalizer_and_pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    for t in SPECIAL_TOKENS:  # so that decode(skip_special_tokens=True) knows them
        tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)])
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json as transformers writes them, and vocab.txt
    (transformers 5 no longer writes it for a tokenizer built from a `tokenizers` object)."""
    hf = DistilBertTokenizerFast(
        tokenizer_object=tok, do_lower_case=False, model_max_length=MAX_LENGTH
    )
    hf.save_pretrained(folder)
    vocab = tok.get_vocab(with_added_tokens=True)
    (folder / "vocab.txt").write_text(
        "".join(t + "\n" for t in sorted(vocab, key=vocab.__getitem__)), encoding="utf-8"
    )
    # Both ways transformers reloads the folder must agree with the object we saved.
    reloaded = DistilBertTokenizerFast.from_pretrained(folder)
    assert reloaded.do_lower_case is False
    assert reloaded.get_vocab() == vocab
    want = tok.encode_batch(TEXTS)
    got = reloaded(TEXTS)["input_ids"]
    assert got == [e.ids for e in want], "reloaded tokenizer disagrees with the one saved"
    file_tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert [e.ids for e in file_tok.encode_batch(TEXTS)] == got


def tokenize_batch(folder: Path) -> dict[str, np.ndarray]:
    """The reference batch, tokenized by transformers' fast tokenizer loaded from `folder`."""
    tok = DistilBertTokenizerFast.from_pretrained(folder)
    enc = tok(
        TEXTS,
        padding=True,
        truncation=True,
        max_length=MAX_LENGTH,
        return_offsets_mapping=True,
        return_tensors="np",
    )
    word_ids = np.array(
        [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(TEXTS))],
        dtype=np.int64,
    )
    out = {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
        "offsets": enc["offset_mapping"].astype(np.int64),
        "word_ids": word_ids,
    }
    lengths = out["attention_mask"].sum(1)
    assert out["input_ids"].shape[1] == MAX_LENGTH, "the long text must be truncated to 40"
    assert lengths[LONG_TEXT_INDEX] == MAX_LENGTH
    assert len(tok(TEXTS[LONG_TEXT_INDEX])["input_ids"]) > MAX_LENGTH
    assert lengths[SHORT_TEXT_INDEX] == 3, "the short text must be [CLS] x [SEP]"
    return out


# --------------------------------------------------------------------------- tiny models

TINY_CONFIG = dict(
    dim=20,
    n_heads=4,  # head width 5
    hidden_dim=37,
    n_layers=3,
    max_position_embeddings=MAX_LENGTH,
    activation="gelu",
    pad_token_id=0,
)

# folder -> (model class, seed, extra config, write pytorch_model.bin too)
TINY_MODELS: dict[str, tuple[type[PreTrainedModel], int, dict[str, Any], bool]] = {
    "tiny": (DistilBertModel, 1, {}, True),
    "tiny-mlm": (DistilBertForMaskedLM, 2, {}, True),
    "tiny-sinusoidal": (DistilBertModel, 3, {"sinusoidal_pos_embds": True}, False),
    "tiny-seqcls": (
        DistilBertForSequenceClassification,
        4,
        {"id2label": {0: "negative", 1: "neutral", 2: "positive"}},
        False,
    ),
    "tiny-qa": (DistilBertForQuestionAnswering, 5, {"num_labels": 2}, False),
    "tiny-tokcls": (
        DistilBertForTokenClassification,
        6,
        {"id2label": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}},
        False,
    ),
}

# Head outputs stored for each model class, by their names on the transformers output.
HEAD_OUTPUTS = {
    DistilBertModel: (),
    DistilBertForMaskedLM: ("logits",),
    DistilBertForSequenceClassification: ("logits",),
    DistilBertForQuestionAnswering: ("start_logits", "end_logits"),
    DistilBertForTokenClassification: ("logits",),
}


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """sin on even columns, cos on odd ones, of pos / 10000^(2*(j//2)/dim), float64 -> float32."""
    j = np.arange(dim)
    angle = np.arange(n_pos)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


@torch.no_grad()
def redraw_parameters(model: torch.nn.Module, seed: int, keep: tuple[str, ...] = ()) -> None:
    """Replace every parameter with values large enough that a numerical slip shows: weights
    N(0, 0.5), LayerNorm weights 1 + N(0, 0.2), biases N(0, 0.2). Tied parameters are drawn once
    (named_parameters lists a shared tensor once). HF's own init (std 0.02, LayerNorm 1/0) leaves
    a model this small nearly constant."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name in keep:
            continue
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        is_norm = "LayerNorm" in name or "layer_norm" in name
        if is_norm and name.endswith(".weight"):
            p.copy_(1.0 + 0.2 * noise)
        elif name.endswith(".bias"):
            p.copy_(0.2 * noise)
        else:
            p.copy_(0.5 * noise)


def make_tiny_model(folder: str, vocab_size: int) -> PreTrainedModel:
    cls, seed, extra, _ = TINY_MODELS[folder]
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=vocab_size, **TINY_CONFIG, **extra)
    config._attn_implementation = "eager"  # SDPA returns no attention probabilities
    model = cls(config).eval()
    keep: tuple[str, ...] = ()
    if config.sinusoidal_pos_embds:
        prefix = "" if cls is DistilBertModel else "distilbert."
        keep = (prefix + "embeddings.position_embeddings.weight",)
        table = model.get_position_embeddings().weight.detach().numpy()
        assert np.array_equal(table, sinusoidal_table(MAX_LENGTH, TINY_CONFIG["dim"]))
    redraw_parameters(model, seed=1000 + seed, keep=keep)
    if cls is DistilBertForMaskedLM:
        assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    return model


def run_model(model: PreTrainedModel, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = model(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            output_hidden_states=True,
            output_attentions=True,
        )
    arrays: dict[str, np.ndarray] = {}
    hidden = [h.numpy() for h in out.hidden_states]
    attn = [a.numpy() for a in out.attentions]
    assert len(hidden) == model.config.n_layers + 1 and len(attn) == model.config.n_layers
    arrays["last_hidden_state"] = hidden[-1]
    for i, h in enumerate(hidden):
        arrays[f"hidden_states/{i}"] = h
    for i, a in enumerate(attn):
        arrays[f"attentions/{i}"] = a
    for name in HEAD_OUTPUTS[type(model)]:
        arrays[name] = getattr(out, name).numpy()
    if isinstance(model, DistilBertModel):
        assert np.array_equal(out.last_hidden_state.numpy(), hidden[-1])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def make_tiny_fixtures(tok: Tokenizer) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for folder, (cls, seed, extra, write_bin) in TINY_MODELS.items():
        path = FIXTURES / folder
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        save_tokenizer(tok, path)
        model = make_tiny_model(folder, tok.get_vocab_size(with_added_tokens=True))
        model.save_pretrained(path)
        if write_bin:
            torch.save(model.state_dict(), path / "pytorch_model.bin")

        batch = tokenize_batch(path)
        outputs = run_model(model, batch)
        # What a user gets from the saved folder must be what we store.
        reloaded = cls.from_pretrained(path, attn_implementation="eager").eval()
        again = run_model(reloaded, batch)
        for k in outputs:
            assert np.array_equal(outputs[k], again[k]), f"{folder}: reload changed {k}"

        for k, v in {**batch, **outputs}.items():
            arrays[f"{folder}/{k}"] = v
        files = sorted(p.name for p in path.iterdir())
        meta[folder] = {
            "class": cls.__name__,
            "seed": seed,
            "config": {**TINY_CONFIG, **{k: v for k, v in extra.items() if k != "id2label"}},
            "id2label": {str(k): v for k, v in model.config.id2label.items()},
            "files": files,
            "keys": sorted(k for k in arrays if k.startswith(folder + "/")),
        }
        print(f"{folder}: {cls.__name__}, files {files}")

    info = {
        "about": "Reference outputs of the tiny models in tests/fixtures/<folder>/; see "
        "scripts/make_reference.py. Arrays are in tiny_reference.npz under '<folder>/<name>'.",
        "texts": TEXTS,
        "tokenizer_call": {
            "padding": "longest",
            "truncation": True,
            "max_length": MAX_LENGTH,
            "return_offsets_mapping": True,
        },
        "short_text_index": SHORT_TEXT_INDEX,
        "long_text_index": LONG_TEXT_INDEX,
        "word_ids_none": -1,
        "shapes": "input_ids/attention_mask/word_ids [B, T]; offsets [B, T, 2]; "
        "last_hidden_state and hidden_states/i [B, T, D] (i = 0 is the embedding output, "
        "i = n_layers equals last_hidden_state); attentions/i [B, H, T, T] post-softmax; "
        "MLM and token-classification logits [B, T, labels]; sequence-classification "
        "logits [B, labels]; start_logits/end_logits [B, T]",
        "models": meta,
        "generated_with": versions(),
    }
    save_npz(FIXTURES / "tiny_reference.npz", arrays)
    save_json(FIXTURES / "tiny_reference.json", info)


# --------------------------------------------------------------------------- full size

LONG_KEEP = list(range(0, 512, 8)) + [511]  # rows of last_hidden_state kept for (a)
BATCH_HIDDEN_KEEP = [0, 2, 16, 39]  # positions of hidden_states kept for (b)
BATCH_ATTENTION_LAYERS = [0, 5]
BATCH_ATTENTION_SEQUENCE = 1


def make_full_size_fixture() -> None:
    sd = synthetic.full_size_state_dict(0)
    digest = synthetic.state_dict_digest(sd)
    inputs = synthetic.full_size_inputs()

    want_config = synthetic.full_size_config()
    config = DistilBertConfig(
        **{
            k: v
            for k, v in want_config.items()
            if k not in ("architectures", "dtype", "model_type")
        }
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DistilBertModel(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    # What transformers itself writes for these weights must be what synthetic.py describes.
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        written = json.loads((Path(tmp) / "config.json").read_text())
        with safetensors.safe_open(str(Path(tmp) / "model.safetensors"), framework="np") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    written.pop("transformers_version", None)
    assert written == want_config, (
        f"config.json differs from synthetic.full_size_config(): {written}"
    )
    assert shapes == dict(synthetic.full_size_key_shapes()), "saved keys/shapes differ"

    def run(ids: np.ndarray, mask: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                output_hidden_states=True,
                output_attentions=True,
            )

    a = run(inputs["long_input_ids"], inputs["long_attention_mask"])
    b = run(inputs["batch_input_ids"], inputs["batch_attention_mask"])
    f32 = np.float32
    arrays: dict[str, np.ndarray] = {
        "weights/digest": np.array(digest),
        "weights/seed": np.array(0, dtype=np.int64),
        "long/input_ids": inputs["long_input_ids"],
        "long/attention_mask": inputs["long_attention_mask"],
        "long/positions": np.array(LONG_KEEP, dtype=np.int64),
        "long/last_hidden_state": a.last_hidden_state.numpy()[:, LONG_KEEP].astype(f32),
        "batch/input_ids": inputs["batch_input_ids"],
        "batch/attention_mask": inputs["batch_attention_mask"],
        "batch/last_hidden_state": b.last_hidden_state.numpy().astype(f32),
        "batch/hidden_states_positions": np.array(BATCH_HIDDEN_KEEP, dtype=np.int64),
        "batch/attentions_layers": np.array(BATCH_ATTENTION_LAYERS, dtype=np.int64),
        "batch/attentions_sequence": np.array(BATCH_ATTENTION_SEQUENCE, dtype=np.int64),
    }
    for i, h in enumerate(b.hidden_states):
        arrays[f"batch/hidden_states/{i}"] = h.numpy()[:, BATCH_HIDDEN_KEEP].astype(f32)
    for i in BATCH_ATTENTION_LAYERS:
        arrays[f"batch/attentions/{i}"] = (
            b.attentions[i].numpy()[BATCH_ATTENTION_SEQUENCE].astype(f32)
        )
    assert len(b.hidden_states) == 7

    info = {
        "about": "Reference outputs of transformers' DistilBertModel (eager attention, float32) "
        "on tests/synthetic.py's full_size_state_dict(seed) and full_size_inputs(); arrays in "
        "full_size_reference.npz.",
        "weights_seed": 0,
        "weights_digest": digest,
        "config": want_config,
        "long": {
            "what": "(a) one sequence of 512 ids ([CLS] ... [SEP]), mask all ones",
            "last_hidden_state": "[1, len(positions), 768]: rows `long/positions` of the "
            "[1, 512, 768] output (every 8th position, and the last, 511)",
            "positions": LONG_KEEP,
        },
        "batch": {
            "what": "(b) 3 sequences of lengths 40, 17, 3, right-padded with id 0 to 40",
            "lengths": list(synthetic.FULL_SIZE_BATCH_LENGTHS),
            "last_hidden_state": "[3, 40, 768], complete (padded positions included)",
            "hidden_states/i": "[3, 4, 768] for i = 0..6 (0 = embedding output): positions "
            "`batch/hidden_states_positions` of every sequence, padded ones included",
            "hidden_states_positions": BATCH_HIDDEN_KEEP,
            "attentions/i": "[12, 40, 40] for i in `batch/attentions_layers`: sequence "
            "`batch/attentions_sequence` only",
            "attentions_layers": BATCH_ATTENTION_LAYERS,
            "attentions_sequence": BATCH_ATTENTION_SEQUENCE,
        },
        "generated_with": versions(),
    }
    save_npz(FIXTURES / "full_size_reference.npz", arrays)
    save_json(FIXTURES / "full_size_reference.json", info)
    print(f"full size: digest {digest}")


# --------------------------------------------------------------------------- files


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for k, v in arrays.items():
        assert v.dtype != object, k
    np.savez_compressed(path, **arrays)
    print(f"wrote {path.relative_to(ROOT)}: {len(arrays)} arrays, {path.stat().st_size:,} bytes")


def save_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    print(f"tokenizer: {tok.get_vocab_size(with_added_tokens=True)} tokens")
    make_tiny_fixtures(tok)
    make_full_size_fixture()


if __name__ == "__main__":
    main()

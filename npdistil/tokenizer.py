"""Text -> token ids with Hugging Face ``tokenizers``, and batches padded for the model.

The Rust tokenizer is configured once (no truncation, no padding) and never mutated afterwards,
so one instance can serve many threads. Truncation, windows and padding are done here on
arrays: a text is tokenized once, in full, and the special tokens the checkpoint's
post-processor adds (``[CLS]`` before, ``[SEP]`` after, for BERT) are put around each piece.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tokenizers
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing

from .errors import CheckpointError, InputError, InputTypeError

__all__ = ["Tokenizer", "Tokens", "Batch", "check_texts"]


class Tokens(NamedTuple):
    """One text's word pieces, without special tokens, never truncated."""

    ids: np.ndarray  # [n] int64
    offsets: np.ndarray  # [n, 2] character offsets into the text: text[start:end]
    word_ids: np.ndarray  # [n] index of the word each piece belongs to
    tokens: list[str]  # n token strings


class Batch(NamedTuple):
    """Texts ready for the model: right-padded to the longest, special tokens added."""

    input_ids: np.ndarray  # [B, T] int64
    attention_mask: np.ndarray  # [B, T] int64, 1 for real tokens, 0 for padding
    offsets: np.ndarray  # [B, T, 2] character offsets; (0, 0) for special tokens and padding
    word_ids: np.ndarray  # [B, T] word index; -1 for special tokens and padding
    tokens: list[list[str]]  # the token strings of each text, without padding
    truncated: np.ndarray  # [B] bool: the text had more tokens than fit, and lost its end


def check_texts(texts: str | Iterable[str]) -> list[str]:
    """A list of valid texts, or an error naming the first bad one by its index.

    >>> check_texts("one text")
    ['one text']
    """
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InputTypeError(
            f"texts must be a str or an iterable of str, got {type(texts).__name__}"
        )
    out = list(texts)
    if not out:
        raise InputError("no texts given (an empty batch)")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputTypeError(f"text {i} is a {type(text).__name__}, not a str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"text {i} is not valid Unicode: lone surrogate at character {exc.start}"
            ) from None
    return out


class Tokenizer:
    """A WordPiece tokenizer from a checkpoint's ``tokenizer.json``.

    >>> tok = Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"])
    >>> tok(["hello world"]).input_ids.tolist()
    [[2, 4, 5, 3]]
    """

    def __init__(self, tokenizer_json: str, max_length: int = 512, pad_id: int = 0) -> None:
        try:
            tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises plain Exception for malformed JSON
            raise CheckpointError(f"tokenizer definition is not valid: {exc}") from None
        tok.no_truncation()
        tok.no_padding()
        if tok.post_processor is None:  # a bare trainer output: add BERT's, as transformers does
            ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]")}
            if None not in ids.values():
                tok.post_processor = TemplateProcessing(
                    single="[CLS] $A [SEP]",
                    pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                    special_tokens=list(ids.items()),  # type: ignore[arg-type]
                )
                tokenizer_json = tok.to_str()
        self._tok = tok
        self._json = tokenizer_json
        self.max_length = max_length
        self.pad_id = pad_id
        # The special tokens the post-processor puts around one sequence: [CLS] ... [SEP].
        probe = tok.post_process(tok.encode("a", add_special_tokens=False))
        special = probe.special_tokens_mask
        n_prefix = next((i for i, s in enumerate(special) if not s), len(special))
        n_suffix = next((i for i, s in enumerate(reversed(special)) if not s), 0)
        self.prefix_ids = np.array(probe.ids[:n_prefix], dtype=np.int64)
        self.suffix_ids = np.array(probe.ids[len(probe.ids) - n_suffix :], dtype=np.int64)
        self.prefix_tokens = probe.tokens[:n_prefix]
        self.suffix_tokens = probe.tokens[len(probe.tokens) - n_suffix :]

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 512, pad_id: int = 0) -> Tokenizer:
        """Read a ``tokenizer.json``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: can't read tokenizer ({exc})") from None
        try:
            return cls(text, max_length, pad_id)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None

    @classmethod
    def from_vocab(
        cls,
        vocab: str | Path | Sequence[str],
        tokenizer_config: dict[str, object] | None = None,
        max_length: int = 512,
        pad_id: int = 0,
    ) -> Tokenizer:
        """Build a BERT WordPiece tokenizer from ``vocab.txt`` (a path) or a list of tokens,
        with the options of ``tokenizer_config.json`` (``do_lower_case`` defaults to True, as
        in transformers)."""
        options = tokenizer_config or {}
        if isinstance(vocab, (str, Path)):
            try:
                lines = Path(vocab).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{vocab}: can't read vocabulary ({exc})") from None
        else:
            lines = list(vocab)
        table = {token: i for i, token in enumerate(lines)}
        specials = {
            key: str(options.get(key, default))
            for key, default in (
                ("unk_token", "[UNK]"),
                ("sep_token", "[SEP]"),
                ("cls_token", "[CLS]"),
                ("pad_token", "[PAD]"),
                ("mask_token", "[MASK]"),
            )
        }
        missing = [t for k, t in specials.items() if k != "mask_token" and t not in table]
        if missing:
            raise CheckpointError(f"{vocab}: vocabulary lacks special tokens {missing}")
        if specials["mask_token"] not in table:
            specials["mask_token"] = specials["unk_token"]
        bert = BertWordPieceTokenizer(
            table,
            unk_token=specials["unk_token"],
            sep_token=specials["sep_token"],
            cls_token=specials["cls_token"],
            pad_token=specials["pad_token"],
            mask_token=specials["mask_token"],
            lowercase=bool(options.get("do_lower_case", True)),
            strip_accents=options.get("strip_accents"),  # type: ignore[arg-type]
            handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)),
        )
        return cls(bert.to_str(), max_length, pad_id)

    def to_json(self) -> str:
        """The ``tokenizer.json`` definition, as stored in npdistil files."""
        return self._json

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def n_special(self) -> int:
        """Special tokens added around every sequence (2 for BERT: [CLS] and [SEP])."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    # ---- tokenizing ---------------------------------------------------------------------------

    def tokenize(self, texts: str | Iterable[str], *, limit: int | None = None) -> list[Tokens]:
        """Every text's word pieces, without special tokens: all of them, or with ``limit`` at
        least ``limit + 1`` of a text that has more (enough to know that it is too long,
        without tokenizing megabytes that truncation would drop)."""
        texts = check_texts(texts)
        cut = [_prefix(t, limit) for t in texts] if limit is not None else texts
        encodings = self._tok.encode_batch(cut, add_special_tokens=False)
        for i, e in enumerate(encodings):  # a prefix that came out short: take the whole text
            if limit is not None and len(e.ids) <= limit and len(cut[i]) < len(texts[i]):
                encodings[i] = self._tok.encode(texts[i], add_special_tokens=False)
        return [
            Tokens(
                ids=np.array(e.ids, dtype=np.int64),
                offsets=np.array(e.offsets, dtype=np.int64).reshape(-1, 2),
                word_ids=np.array([-1 if w is None else w for w in e.word_ids], dtype=np.int64),
                tokens=e.tokens,
            )
            for e in encodings
        ]

    def __call__(self, texts: str | Iterable[str], *, max_length: int | None = None) -> Batch:
        """Tokenize, truncate to ``max_length`` (default: the model's positions) with a
        warning, add special tokens, and pad."""
        max_length = max_length or self.max_length
        room = max_length - self.n_special
        if room < 1:
            raise InputError(f"max_length {max_length} leaves no room for any token")
        pieces = self.tokenize(texts, limit=room)
        batch = self.pad([_head(p, room) for p in pieces])
        truncated = np.array([len(p.ids) > room for p in pieces])
        if truncated.any():
            warnings.warn(
                f"{np.count_nonzero(truncated)} text(s) longer than {max_length} tokens were "
                f"truncated (first: text {int(np.flatnonzero(truncated)[0])}); use "
                "model.encode(...) to embed long texts in windows",
                stacklevel=2,
            )
        return batch._replace(truncated=truncated)

    def pad_ids(self, ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Put special tokens around each id sequence and right-pad them: input_ids [B, T]
        and attention_mask [B, T]."""
        if not ids:
            raise InputError("no texts given (an empty batch)")
        n_pre, n_suf = len(self.prefix_ids), len(self.suffix_ids)
        width = max(len(i) for i in ids) + n_pre + n_suf
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            n = len(seq)
            input_ids[row, :n_pre] = self.prefix_ids
            input_ids[row, n_pre : n_pre + n] = seq
            input_ids[row, n_pre + n : n_pre + n + n_suf] = self.suffix_ids
            mask[row, : n_pre + n + n_suf] = 1
        return input_ids, mask

    def pad(self, pieces: Sequence[Tokens]) -> Batch:
        """``pad_ids``, keeping each token's offsets, word id and string."""
        input_ids, mask = self.pad_ids([p.ids for p in pieces])
        n_pre = len(self.prefix_ids)
        offsets = np.zeros((*input_ids.shape, 2), dtype=np.int64)
        word_ids = np.full(input_ids.shape, -1, dtype=np.int64)
        for row, p in enumerate(pieces):
            offsets[row, n_pre : n_pre + len(p.ids)] = p.offsets
            word_ids[row, n_pre : n_pre + len(p.ids)] = p.word_ids
        tokens = [[*self.prefix_tokens, *p.tokens, *self.suffix_tokens] for p in pieces]
        return Batch(
            input_ids, mask, offsets, word_ids, tokens, np.zeros(len(pieces), dtype=np.int64)
        )


# Runs of characters between ASCII spaces. Cutting a text just after such a run never splits
# a word, so the pieces before the cut are those of the whole text.
_RUN = re.compile(r"[^ ]+")


def _prefix(text: str, limit: int) -> str:
    """A prefix of ``text`` holding more than ``limit`` space-separated runs (each gives at
    least one piece, unless it is all control characters: then the caller re-tokenizes)."""
    if len(text) <= 32 * (limit + 1):  # short enough to tokenize whole
        return text
    for k, run in enumerate(_RUN.finditer(text)):
        if k == limit:
            return text[: run.end()]
    return text


def _head(p: Tokens, n: int) -> Tokens:
    return Tokens(p.ids[:n], p.offsets[:n], p.word_ids[:n], p.tokens[:n])


def tokenizer_definition(folder: Path) -> str | None:
    """The ``tokenizer.json`` text of a checkpoint folder, built from ``vocab.txt`` and
    ``tokenizer_config.json`` when that is all there is; None when there is no tokenizer."""
    if (folder / "tokenizer.json").is_file():
        path = folder / "tokenizer.json"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: can't read tokenizer ({exc})") from None
        Tokenizer(text)  # refuse a broken definition now, not at first use
        return text
    if (folder / "vocab.txt").is_file():
        options: dict[str, object] = {}
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            try:
                options = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{config_path}: not readable JSON ({exc})") from None
        return Tokenizer.from_vocab(folder / "vocab.txt", options).to_json()
    return None

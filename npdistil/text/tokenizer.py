"""Text -> token ids with Hugging Face ``tokenizers``, and batches padded for the model.

The Rust tokenizer is configured once (no truncation, no padding) and never mutated afterwards,
so one instance can serve many threads. Truncation, windows and padding are done here on
arrays: a text is tokenized once, in full, and the special tokens the checkpoint's
post-processor adds (``[CLS]`` before, ``[SEP]`` after, for BERT) are put around each piece.

At ~610 lines it is a little over the package's ~600: most of it is ``Tokenizer``, whose
methods mirror transformers' tokenizer (pairs, windows, offsets, decoding, special tokens) and
read best side by side.
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
from tokenizers import normalizers
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing

from ..errors import CheckpointError, InputError, InputTypeError

__all__ = ["Tokenizer", "Tokens", "Batch", "check_texts", "longest_first", "overflow_windows"]


class Tokens(NamedTuple):
    """One text's word pieces, without special tokens, never truncated."""

    ids: np.ndarray  # [n] int64
    offsets: np.ndarray  # [n, 2] character offsets into the text: text[start:end]
    word_ids: np.ndarray  # [n] index of the word each piece belongs to
    tokens: list[str]  # n token strings


class Batch(NamedTuple):
    """Texts (or text pairs) ready for the model: right-padded to the longest, special tokens
    added. For a pair, offsets and word ids of the second text's tokens refer to that text."""

    input_ids: np.ndarray  # [B, T] int64
    attention_mask: np.ndarray  # [B, T] int64, 1 for real tokens, 0 for padding
    offsets: np.ndarray  # [B, T, 2] character offsets; (0, 0) for special tokens and padding
    word_ids: np.ndarray  # [B, T] word index; -1 for special tokens and padding
    tokens: list[list[str]]  # the token strings of each text, without padding
    truncated: np.ndarray  # [B] bool: the text had more tokens than fit, and lost its end
    # [B, T] int64: 0 for the first text of a pair and its specials, 1 for the second (BERT);
    # None for models without token types (DistilBERT), whose tokenizers return none.
    token_type_ids: np.ndarray | None = None
    # [B, T] int64: which text each token comes from, 0 or 1 (the second text of a pair), -1
    # for special tokens and padding, as transformers' ``sequence_ids``; every Batch the
    # Tokenizer makes has them.
    sequence_ids: np.ndarray | None = None


class _Slot(NamedTuple):
    """One run of a post-processor's template: special tokens, or where a text's pieces go."""

    ids: np.ndarray  # the special tokens' ids; empty for a text slot
    tokens: list[str]
    types: np.ndarray  # their token type ids
    text: int  # -1 for special tokens; 0 or 1: which text of the pair goes here
    text_type: int  # the token type of that text's pieces


def _template(encoding: tokenizers.Encoding) -> list[_Slot]:
    """The slots of a post-processed probe encoding: runs of special tokens and of each text."""
    slots: list[_Slot] = []
    special = encoding.special_tokens_mask
    for i, (seq, type_id) in enumerate(zip(encoding.sequence_ids, encoding.type_ids, strict=True)):
        text = -1 if special[i] or seq is None else seq
        if slots and slots[-1].text == text == -1:  # one more special token in the run
            last = slots[-1]
            slots[-1] = last._replace(
                ids=np.append(last.ids, encoding.ids[i]),
                tokens=[*last.tokens, encoding.tokens[i]],
                types=np.append(last.types, type_id),
            )
        elif text == -1:
            ids, tokens = np.array([encoding.ids[i]]), [encoding.tokens[i]]
            slots.append(_Slot(ids, tokens, np.array([type_id]), -1, 0))
        elif not slots or slots[-1].text != text:
            empty = np.zeros(0, dtype=np.int64)
            slots.append(_Slot(empty, [], empty, text, type_id))
    return slots


def longest_first(n_a: int, n_b: int, room: int) -> tuple[int, int]:
    """How many tokens of each text of a pair to keep when they must share ``room``: the longer
    one loses tokens first, as tokenizers' (and transformers') default "longest_first".

    >>> longest_first(3, 10, 8), longest_first(10, 10, 9)
    ((3, 5), (4, 5))
    """
    if n_a + n_b <= room:
        return n_a, n_b
    swap = n_a > n_b
    short, long = (n_b, n_a) if swap else (n_a, n_b)
    if short > room // 2:  # both lose tokens: halves, the odd one to the longer (or the second)
        short, long = room // 2, room // 2 + room % 2
    else:
        long = room - short
    return (long, short) if swap else (short, long)


def overflow_windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges ``(start, stop)`` cutting ``n`` tokens into windows of ``size`` that share
    ``stride`` tokens with the next, as tokenizers' truncation with ``stride`` and
    transformers' ``return_overflowing_tokens=True``: windows step by ``size - stride`` from
    the first token, and the last one stops at the text's end, possibly short.

    >>> overflow_windows(10, 4, 1), overflow_windows(3, 4, 1)
    ([(0, 4), (3, 7), (6, 10)], [(0, 3)])
    """
    if n <= size:
        return [(0, n)]
    if not 0 <= stride < size:
        raise InputError(f"stride {stride} must be in [0, {size}) for windows of {size} tokens")
    ranges = []
    for start in range(0, n, size - stride):
        ranges.append((start, min(start + size, n)))
        if start + size >= n:
            break
    return ranges


def check_texts(texts: str | Iterable[str], name: str = "text") -> list[str]:
    """A list of valid texts, or an error naming the first bad one by its index (as ``name``:
    "text", "question", "context", ...).

    >>> check_texts("one text")
    ['one text']
    """
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InputTypeError(
            f"{name}s must be a str or an iterable of str, got {type(texts).__name__}"
        )
    out = list(texts)
    if not out:
        raise InputError(f"no {name}s given (an empty batch)")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputTypeError(f"{name} {i} is a {type(text).__name__}, not a str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"{name} {i} is not valid Unicode: lone surrogate at character {exc.start}"
            ) from None
    return out


class Tokenizer:
    """A WordPiece tokenizer from a checkpoint's ``tokenizer.json``.

    >>> tok = Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"])
    >>> tok(["hello world"]).input_ids.tolist()
    [[2, 4, 5, 3]]
    >>> pair = tok(["hello"], ["world"])
    >>> pair.input_ids.tolist(), pair.token_type_ids.tolist(), pair.sequence_ids.tolist()
    ([[2, 4, 3, 5, 3]], [[0, 0, 0, 1, 1]], [[-1, 0, -1, 1, -1]])

    ``token_types=False`` (models without token-type embeddings, DistilBERT) leaves
    ``Batch.token_type_ids`` None; ``lowercase=True`` lowercases every text first, as
    sentence-transformers' ``do_lower_case``.
    """

    def __init__(
        self,
        tokenizer_json: str,
        max_length: int = 512,
        pad_id: int = 0,
        *,
        token_types: bool = True,
        lowercase: bool = False,
    ) -> None:
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
        self._json = tokenizer_json  # as the checkpoint defines it, before do_lower_case
        if lowercase and not _lowercases(tok.normalizer):
            # sentence-transformers' do_lower_case: a Lowercase normalizer put first.
            rest = [] if tok.normalizer is None else [tok.normalizer]
            tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])
        self._tok = tok
        self.max_length = max_length
        self.pad_id = pad_id
        self.token_types = token_types
        self.lowercase = lowercase
        # Where the post-processor puts special tokens around one text ([CLS] A [SEP]) and a
        # pair ([CLS] A [SEP] B [SEP]), learned from probes, with their token types.
        self._single = _template(tok.encode("a"))
        self._pair = _template(tok.encode("a", "b"))
        single = [s for s in self._single if s.text == -1]
        first = self._single[0].text == -1
        prefix = single[0] if first else None
        suffix = single[-1] if self._single[-1].text == -1 and len(self._single) > 1 else None
        self.prefix_ids = prefix.ids if prefix else np.zeros(0, dtype=np.int64)
        self.suffix_ids = suffix.ids if suffix else np.zeros(0, dtype=np.int64)
        self.prefix_tokens = prefix.tokens if prefix else []
        self.suffix_tokens = suffix.tokens if suffix else []

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

    # ---- ids and strings, as transformers' tokenizers name them --------------------------------

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """The token string of an id, or of each id.

        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing"]
        >>> tok = Tokenizer.from_vocab(vocab)
        >>> tok.convert_ids_to_tokens([2, 5, 6, 3])
        ['[CLS]', 'play', '##ing', '[SEP]']
        """
        if isinstance(ids, (int, np.integer)):
            return self._token(int(ids))
        return [self._token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """The id of a token string, or of each (unknown strings get the unknown token's id)."""
        if isinstance(tokens, str):
            return self._id(tokens)
        return [self._id(t) for t in tokens]

    def token_to_id(self, token: str) -> int | None:
        """The id of a token of the vocabulary, None if it is not one."""
        return self._tok.token_to_id(token)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Token ids back to text, as the checkpoint's decoder joins word pieces.

        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing"]
        >>> tok = Tokenizer.from_vocab(vocab)
        >>> tok.decode([2, 5, 6, 3]), tok.decode([2, 5, 6, 3], skip_special_tokens=True)
        ('[CLS] playing [SEP]', 'playing')
        """
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        """Token strings joined as the checkpoint's decoder joins them (WordPiece: ``##``
        pieces glued to the previous one, spaces before punctuation cleaned up); joined by
        spaces when the tokenizer has no decoder, as in transformers.

        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing"]
        >>> Tokenizer.from_vocab(vocab).convert_tokens_to_string(["play", "##ing", "it", "!"])
        'playing it!'
        """
        tokens = list(tokens)
        decoder = self._tok.decoder
        return " ".join(tokens) if decoder is None else decoder.decode(tokens)

    @property
    def continuing_subword_prefix(self) -> str | None:
        """What marks a piece that continues a word ("##" in WordPiece vocabularies); None for
        a tokenizer model that has no such mark (or an empty one)."""
        prefix = getattr(self._tok.model, "continuing_subword_prefix", None)
        return prefix if isinstance(prefix, str) and prefix else None

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of the special tokens ([PAD], [UNK], [CLS], [SEP], [MASK], ...)."""
        added = self._tok.get_added_tokens_decoder()
        return sorted(i for i, t in added.items() if t.special)

    @property
    def mask_token(self) -> str:
        """The token fill-mask predicts ("[MASK]" in BERT and DistilBERT vocabularies)."""
        added = self._tok.get_added_tokens_decoder()
        for i in sorted(added):
            if added[i].special and added[i].content in _MASK_TOKENS:
                return added[i].content
        for token in _MASK_TOKENS:  # a vocabulary that lists it without marking it special
            if self._tok.token_to_id(token) is not None:
                return token
        raise CheckpointError("this tokenizer has no mask token ([MASK])")

    @property
    def mask_token_id(self) -> int:
        return self._id(self.mask_token)

    def _token(self, i: int) -> str:
        token = self._tok.id_to_token(i)
        if token is None:
            raise InputError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return token

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None and self.unk_token is not None:
            i = self._tok.token_to_id(self.unk_token)
        if i is None:
            raise InputError(
                f"token {token!r} is not in the vocabulary, which has no unknown token"
            )
        return i

    @property
    def unk_token(self) -> str | None:
        """The token unknown words become ("[UNK]", "<unk>"); None for a vocabulary that has
        none (a byte-level BPE spells every text with its 256 bytes)."""
        model = json.loads(self._json)["model"]
        if "unk_id" in model:  # a Unigram (SentencePiece) model names it by id
            return None if model["unk_id"] is None else self._tok.id_to_token(model["unk_id"])
        token = model.get("unk_token", "[UNK]")
        return None if token is None else str(token)

    @property
    def unk_token_id(self) -> int | None:
        return None if self.unk_token is None else self._id(self.unk_token)

    @property
    def n_special(self) -> int:
        """Special tokens added around every sequence (2 for BERT: [CLS] and [SEP])."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    @property
    def n_special_pair(self) -> int:
        """Special tokens added around a pair (3 for BERT: [CLS] A [SEP] B [SEP])."""
        return sum(len(s.ids) for s in self._pair)

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

    def __call__(
        self,
        texts: str | Iterable[str],
        pairs: str | Iterable[str] | None = None,
        *,
        max_length: int | None = None,
    ) -> Batch:
        """Tokenize, truncate to ``max_length`` (default: the model's positions) with a
        warning, add special tokens, and pad.

        With ``pairs`` (as many as ``texts``), each row is the pair ``texts[i]``, ``pairs[i]``:
        ``[CLS] text [SEP] pair [SEP]`` for BERT, token types 0 then 1 (a question and its
        context, two sentences to compare). A pair too long loses tokens from the end of its
        longer text first, as transformers' default ``truncation="longest_first"``.
        """
        max_length = max_length or self.max_length
        rows: list[tuple[Tokens, Tokens | None]]
        if pairs is None:
            room = max_length - self.n_special
            if room < 1:
                raise InputError(f"max_length {max_length} leaves no room for any token")
            pieces = self.tokenize(texts, limit=room)
            rows = [(_head(p, room), None) for p in pieces]
            truncated = np.array([len(p.ids) > room for p in pieces])
        else:
            room = max_length - self.n_special_pair
            if room < 2:
                raise InputError(f"max_length {max_length} leaves no room for a pair")
            firsts, seconds = check_texts(texts), check_texts(pairs)
            if len(firsts) != len(seconds):
                raise InputError(f"{len(firsts)} texts but {len(seconds)} pairs: give one each")
            rows, truncated_rows = [], []
            pieces_a, pieces_b = (
                self.tokenize(firsts, limit=room),
                self.tokenize(seconds, limit=room),
            )
            for a, b in zip(pieces_a, pieces_b, strict=True):
                n_a, n_b = longest_first(len(a.ids), len(b.ids), room)
                rows.append((_head(a, n_a), _head(b, n_b)))
                truncated_rows.append(n_a < len(a.ids) or n_b < len(b.ids))
            truncated = np.array(truncated_rows)
        if truncated.any():
            what = "text(s)" if pairs is None else "pair(s)"
            warnings.warn(
                f"{np.count_nonzero(truncated)} {what} longer than {max_length} tokens were "
                f"truncated (first: text {int(np.flatnonzero(truncated)[0])}); use "
                "model.encode(...) to embed long texts in windows",
                stacklevel=2,
            )
        return self._pad_rows(rows)._replace(truncated=truncated)

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

    def pad(self, pieces: Sequence[Tokens], pairs: Sequence[Tokens] | None = None) -> Batch:
        """``pad_ids``, keeping each token's offsets, word id and string; with ``pairs`` (as
        many as ``pieces``), each row is the pair ``pieces[i]``, ``pairs[i]``, laid out as
        ``__call__`` lays out pairs, without truncating them."""
        if pairs is None:
            return self._pad_rows([(p, None) for p in pieces])
        if len(pairs) != len(pieces):
            raise InputError(f"{len(pieces)} texts but {len(pairs)} pairs: give one each")
        return self._pad_rows(list(zip(pieces, pairs, strict=True)))

    def _pad_rows(self, rows: Sequence[tuple[Tokens, Tokens | None]]) -> Batch:
        """Texts (or pairs) laid out by the post-processor's template and right-padded."""
        if not rows:
            raise InputError("no texts given (an empty batch)")
        laid = [self._lay_out(a, b) for a, b in rows]  # per row: the slots' pieces, in order
        width = max(sum(len(piece.ids) for piece, _, _ in row) for row in laid)
        b = len(rows)
        input_ids = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        types = np.zeros((b, width), dtype=np.int64)
        offsets = np.zeros((b, width, 2), dtype=np.int64)
        word_ids = np.full((b, width), -1, dtype=np.int64)
        sequence_ids = np.full((b, width), -1, dtype=np.int64)
        tokens = []
        for r, row in enumerate(laid):
            at = 0
            for piece, type_ids, text in row:
                span = slice(at, at + len(piece.ids))
                input_ids[r, span], types[r, span] = piece.ids, type_ids
                offsets[r, span], word_ids[r, span] = piece.offsets, piece.word_ids
                sequence_ids[r, span] = text
                at += len(piece.ids)
            mask[r, :at] = 1
            tokens.append([t for piece, _, _ in row for t in piece.tokens])
        return Batch(
            input_ids,
            mask,
            offsets,
            word_ids,
            tokens,
            np.zeros(b, dtype=bool),
            types if self.token_types else None,
            sequence_ids,
        )

    def _lay_out(self, a: Tokens, b: Tokens | None) -> list[tuple[Tokens, np.ndarray, int]]:
        """One row's pieces in template order, each with its token types and the text it comes
        from (-1: special tokens, which get offsets (0, 0) and word id -1)."""
        out = []
        for slot in self._single if b is None else self._pair:
            if slot.text == -1:
                n = len(slot.ids)
                specials = Tokens(
                    slot.ids, np.zeros((n, 2), np.int64), np.full(n, -1, np.int64), slot.tokens
                )
                out.append((specials, slot.types, -1))
            else:
                piece = a if slot.text == 0 else b
                assert piece is not None
                types = np.full(len(piece.ids), slot.text_type, dtype=np.int64)
                out.append((piece, types, slot.text))
        return out


# Mask tokens by their usual spellings: BERT's vocabularies, and RoBERTa-style ones.
_MASK_TOKENS = ("[MASK]", "<mask>")

# Runs of characters between ASCII spaces. Cutting a text just after such a run never splits
# a word, so the pieces before the cut are those of the whole text.
_RUN = re.compile(r"[^ ]+")


def _lowercases(normalizer: object) -> bool:
    """Whether a normalizer (or a sequence of them) already has a Lowercase step, as
    sentence-transformers checks before adding one."""
    if isinstance(normalizer, normalizers.Lowercase):
        return True
    if isinstance(normalizer, normalizers.Sequence):
        return any(isinstance(n, normalizers.Lowercase) for n in normalizer)  # type: ignore[attr-defined]
    return False


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

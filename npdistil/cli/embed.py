"""``npdistil embed``: texts -> sentence, token or word embeddings, printed or written to a .jsonl,
.npy or .npz file as they arrive, in bounded memory."""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..api import Model, load
from ..text.encode import TokenEmbeddings, WordEmbeddings
from .options import (
    Input,
    Text,
    UsageError,
    check_input,
    check_texts_or_input,
    count,
    input_options,
    located,
    model_option,
    no_revision_for_local,
    positive,
)

OUTPUT_VALUES = {
    "sentence": "sentence_embedding",
    "token": "tokens",
    "word": "word_embeddings",
}
_OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".npy": "npy", ".npz": "npz"}


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    e = sub.add_parser("embed", parents=[hub], help="embed texts (arguments, or --input FILE)")
    e.set_defaults(run=embed)
    e.add_argument("texts", nargs="*", help="texts to embed")
    model_option(e)
    e.add_argument("--output-value", choices=list(OUTPUT_VALUES), default="sentence")
    e.add_argument(
        "--pooling",
        choices=["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"],
        help="sentence pooling (default: the model's; mean for a plain checkpoint)",
    )
    e.add_argument("--prompt", help="text put before every text (sentence embeddings)")
    e.add_argument("--prompt-name", help="one of the model's prompts, by name")
    e.add_argument(
        "--word-pooling",
        choices=["first", "mean", "max"],
        help="word output: how a word's pieces make its vector (default: first)",
    )
    e.add_argument("--normalize", action="store_true", help="L2-normalise sentence embeddings")
    e.add_argument(
        "--include-special-tokens", action="store_true", help="token output: keep [CLS] and [SEP]"
    )
    e.add_argument(
        "--long-text",
        choices=["window", "truncate", "error"],
        help="texts over the window (default: truncate for sentence-transformers models, at "
        "their max_seq_length, as they do; window otherwise)",
    )
    e.add_argument(
        "--window",
        type=positive,
        help="tokens per window (default: the model's max_seq_length, or its positions)",
    )
    e.add_argument(
        "--stride", type=count, help="tokens shared by neighbouring windows (--long-text window)"
    )
    e.add_argument("--batch-size", type=positive, default=32, help="(default: %(default)s)")
    input_options(e)
    e.add_argument("--output", help="write to a .jsonl, .npy or .npz file; - for stdout (jsonl)")
    e.add_argument(
        "--format", choices=["jsonl", "npy", "npz"], help="default: from the --output suffix"
    )
    e.add_argument(
        "--chunk-size",
        type=positive,
        default=4096,
        help="texts held in memory at once (default: %(default)s)",
    )
    e.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when writing a file from a terminal)",
    )


def _output_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.output == "-":
        return "jsonl"
    suffix = Path(args.output).suffix.lower()
    if suffix in _OUTPUT_SUFFIXES:
        return _OUTPUT_SUFFIXES[suffix]
    from ..weights.storage import is_regular_target

    if not is_regular_target(args.output):  # a pipe, /dev/stdout: text, as `-` is
        return "jsonl"
    raise UsageError(
        f"{args.output}: can't tell the format from {suffix or 'no suffix'}; "
        "name it .jsonl, .npy or .npz, or pass --format"
    )


def _check_embed(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Refuse options that would be ignored; the input and output formats."""
    check_texts_or_input(args)
    kind = args.output_value
    for flag, given, wanted in (
        ("--pooling", args.pooling, "sentence"),
        ("--prompt", args.prompt, "sentence"),
        ("--prompt-name", args.prompt_name, "sentence"),
        ("--normalize", args.normalize, "sentence"),
        ("--word-pooling", args.word_pooling, "word"),
        ("--include-special-tokens", args.include_special_tokens, "token"),
    ):
        if given and kind != wanted:
            raise UsageError(f"{flag} applies to --output-value {wanted}, not {kind}")
    if args.stride is not None and args.long_text not in (None, "window"):
        raise UsageError(f"--stride applies to --long-text window, not {args.long_text}")
    no_revision_for_local(args, args.model)
    in_fmt = check_input(args)
    if args.format and args.output is None:
        raise UsageError("--format applies to --output")
    out_fmt = _output_format(args) if args.output is not None else None
    if out_fmt == "npy" and kind != "sentence":
        raise UsageError(f"npy output holds sentence embeddings only; use npz or jsonl for {kind}")
    if out_fmt in ("npy", "npz") and args.output == "-" and sys.stdout.isatty():
        raise UsageError(f"{out_fmt} is binary: not written to a terminal")
    return in_fmt, out_fmt


def embed(args: argparse.Namespace) -> int:
    in_fmt, out_fmt = _check_embed(args)
    kind = args.output_value
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "output_value": OUTPUT_VALUES[kind],
        "long_text": args.long_text,
        "window": args.window,
        "stride": args.stride,
    }
    if kind == "sentence":  # the model's own pooling, prompt and modules unless given
        options |= {
            "pooling": args.pooling,
            "prompt": args.prompt,
            "prompt_name": args.prompt_name,
            "normalize_embeddings": args.normalize,
        }
    elif kind == "word":
        options["word_pooling"] = args.word_pooling or "first"
    else:
        options["include_special_tokens"] = args.include_special_tokens
    texts = Input(args, in_fmt or "txt")  # opened first: a missing file fails at once
    try:
        model = load(args.model, revision=args.revision, local_files_only=args.offline)
        if args.stride is not None and args.long_text is None and model._max_seq_length:
            raise UsageError(
                "--stride applies to --long-text window; this sentence-transformers model "
                "truncates at its max_seq_length unless given --long-text window"
            )
        to_file = args.output not in (None, "-")
        progress = args.progress if args.progress is not None else to_file and _tty(sys.stderr)
        if progress:
            texts.count()
        with _Progress(texts.total, progress) as bar:
            chunks = _embed_chunks(model, texts, args.chunk_size, options, bar)
            if args.output is None:
                for chunk, results in chunks:
                    _print_results(chunk, results, kind)
                return 0
            from .output import open_writer

            target: Path | BinaryIO = Path(args.output) if to_file else sys.stdout.buffer
            assert out_fmt is not None
            dim = model.get_sentence_embedding_dimension() if kind == "sentence" else None
            with open_writer(target, out_fmt, kind, dim or model.config.dim) as writer:
                for chunk, results in chunks:
                    writer.write([t.id for t in chunk], results)
        if to_file:
            blank = f" (skipped {texts.blank} blank line(s))" if texts.blank else ""
            print(
                f"wrote {writer.count} {kind} embedding(s) to {args.output}{blank}", file=sys.stderr
            )
    finally:
        texts.close()
    return 0


def _tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _embed_chunks(
    model: Model, texts: Input, chunk_size: int, options: dict[str, Any], bar: _Progress
) -> Iterator[tuple[list[Text], Any]]:
    """Each ``chunk_size`` texts with their results, in order; messages about a text name its
    file and line (or argument) instead of its index in the chunk."""
    stream = iter(texts)
    while chunk := list(itertools.islice(stream, chunk_size)):
        on_batch = bar.batch_done(len(chunk))
        results = located(
            functools.partial(_encode_texts, options=options, on_batch=on_batch), model, chunk
        )
        bar.chunk_done(len(chunk))
        yield chunk, results


def _encode_texts(
    model: Model,
    chunk: list[Text],
    *,
    options: dict[str, Any],
    on_batch: Callable[[int, int], None],
) -> Any:
    return model.encode([t.text for t in chunk], **options, on_batch=on_batch)


class _Progress:
    """A bar counting texts, moved as each batch finishes (a chunk holds many batches)."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="text", desc="npdistil", disable=not enabled)
        self.start = 0  # texts of the chunks done

    def batch_done(self, n_texts: int) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:  # pieces of this chunk done, and in all
            self.bar.update(self.start + n_texts * done // total - self.bar.n)

        return update

    def chunk_done(self, n_texts: int) -> None:
        self.start += n_texts
        self.bar.update(self.start - self.bar.n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _print_results(chunk: list[Text], results: Any, kind: str) -> None:
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    for t, r in zip(chunk, results, strict=True):
        shown = t.text if len(t.text) <= 60 else t.text[:57] + "..."
        print(f"[{t.id}] {shown!r}")
        if kind == "sentence":
            print(f"    {_vector(r)}  ({r.shape[0]} dims, norm {np.linalg.norm(r):.4f})")
            continue
        assert isinstance(r, (TokenEmbeddings, WordEmbeddings))
        names = r.tokens if isinstance(r, TokenEmbeddings) else r.words
        for name, (a, b), v in zip(names, r.offsets.tolist(), r.vectors, strict=True):
            print(f"    {name!r:>16} {a:>5}:{b:<5} {_vector(v)}")


def _vector(v: np.ndarray) -> str:
    head = ", ".join(f"{x:+.4f}" for x in v[:4])
    return f"[{head}, ...]"

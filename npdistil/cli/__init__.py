"""The ``npdistil`` command: embed texts, convert checkpoints, describe them, tidy the cache.

It behaves as a Unix filter: ``--input -`` reads stdin, ``--output -`` writes JSON Lines to
stdout as results arrive, a closed pipe (``| head``) ends it quietly, and every error is one
line on stderr. Exit status: 0 done; 1 an error while running (input, model, Hub, disk);
2 a command line that can't be run as given (unknown, invalid or conflicting options);
130 interrupted; a reader that closed the pipe ends it by SIGPIPE, as it ends other Unix tools
(status 141 in a shell).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import itertools
import json
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NoReturn

import numpy as np

from .. import __version__, inside
from ..api import DistilBert, load
from ..errors import InputError, InputTypeError, NpdistilError
from ..text.encode import TokenEmbeddings, WordEmbeddings
from ..text.sentence import Dense, Pooling
from ..weights.loader import DEFAULT_MODEL

__all__ = ["main"]

log = logging.getLogger("npdistil")

_OUTPUT_VALUES = {
    "sentence": "sentence_embedding",
    "token": "tokens",
    "word": "word_embeddings",
}
_INPUT_SUFFIXES = {".txt": "txt", ".text": "txt", "": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".npy": "npy", ".npz": "npz"}
_ERRORS = ("strict", "replace", "ignore", "backslashreplace")
_SIGPIPE_STATUS = 128 + 13


class UsageError(Exception):
    """A command line that can't be run as given (exit status 2)."""


# ---- the command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _encoding(text: str) -> str:
    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r}") from None
    return text


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="npdistil", description="DistilBERT and BERT inference in pure NumPy.")
    p.add_argument("--version", action="version", version=f"npdistil {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    hub = _Parser(add_help=False)
    hub.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    hub.add_argument(
        "--offline",
        action="store_true",
        help="use only what is cached; make no network request (sets HF_HUB_OFFLINE=1)",
    )

    e = sub.add_parser("embed", parents=[hub], help="embed texts (arguments, or --input FILE)")
    e.add_argument("texts", nargs="*", help="texts to embed")
    e.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id, local checkpoint folder or npdistil file (default: %(default)s)",
    )
    e.add_argument("--output-value", choices=list(_OUTPUT_VALUES), default="sentence")
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
        type=_positive,
        help="tokens per window (default: the model's max_seq_length, or its positions)",
    )
    e.add_argument(
        "--stride", type=_count, help="tokens shared by neighbouring windows (--long-text window)"
    )
    e.add_argument("--batch-size", type=_positive, default=32, help="(default: %(default)s)")
    _input_options(e)
    e.add_argument("--output", help="write to a .jsonl, .npy or .npz file; - for stdout (jsonl)")
    e.add_argument(
        "--format", choices=["jsonl", "npy", "npz"], help="default: from the --output suffix"
    )
    e.add_argument(
        "--chunk-size",
        type=_positive,
        default=4096,
        help="texts held in memory at once (default: %(default)s)",
    )
    e.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when writing a file from a terminal)",
    )

    c = sub.add_parser("convert", parents=[hub], help="convert a checkpoint into an npdistil file")
    c.add_argument("source", help="Hub id, local checkpoint folder (or npdistil file: a copy)")
    c.add_argument("output", type=Path, help="the npdistil .safetensors file to write")
    c.add_argument(
        "--dtype",
        choices=["float32", "float16", "int8"],
        help="store the big matrices as float16 (1/2 the size) or int8 (1/4): small weights for "
        "small machines (default: float32 from a checkpoint, as they are from an npdistil file)",
    )

    d = sub.add_parser(
        "doctor", help="what npdistil runs on: NumPy, BLAS, its kernel and threads, measured"
    )
    d.add_argument(
        "--no-measure", action="store_true", help="skip the two-second matrix-product measurement"
    )

    i = sub.add_parser("info", parents=[hub], help="describe a model: config, size, source")
    i.add_argument("source", help="npdistil file, Hub id or local checkpoint folder")
    i.add_argument(
        "--tensors", action="store_true", help="print the weight tree with shapes instead"
    )
    _inside_parsers(sub, hub)
    _task_parsers(sub, hub)

    k = sub.add_parser("cache", help="npdistil's cache of converted files ($NPDISTIL_CACHE)")
    ks = k.add_subparsers(dest="action", required=True)
    ks.add_parser("list", help="every file, its size, source and state")
    prune = ks.add_parser("prune", help="remove stale, orphan and abandoned files")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    ks.add_parser("clear", help="remove every converted file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status. Called without ``argv`` (as the installed
    ``npdistil`` program), a closed stdout pipe ends the process by SIGPIPE."""
    args = _parser().parse_args(argv)
    # Only npdistil's own logger: the root logger would print huggingface_hub's messages again.
    handler, propagate = _StderrHandler(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(), _offline(getattr(args, "offline", False)):
            warnings.showwarning = _show_warning
            status = _COMMANDS[args.command](args)
            sys.stdout.flush()
            return status
    except UsageError as exc:
        print(f"npdistil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _reader_went_away(kill=argv is None)
    except (NpdistilError, OSError) as exc:
        print(f"npdistil: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"npdistil: {record.getMessage()}", file=sys.stderr)


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"npdistil: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def _offline(on: bool) -> Iterator[None]:
    """``--offline``: HF_HUB_OFFLINE=1 for this run (huggingface_hub reads it at import; if it
    was imported already, its constant is set too), put back as it was afterwards."""
    if not on:
        yield
        return
    before = os.environ.get("HF_HUB_OFFLINE")
    constants: Any = sys.modules.get("huggingface_hub.constants")
    constant = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
        if constants is not None:
            constants.HF_HUB_OFFLINE = constant


def _reader_went_away(kill: bool) -> int:
    """stdout's reader closed the pipe (``| head``): stop quietly. As the Python docs advise,
    stdout is pointed at devnull so that the final flush can't fail again; then the process
    ends by SIGPIPE, as a C program's would."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if kill and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    return _SIGPIPE_STATUS


def _no_revision_for_local(args: argparse.Namespace, source: str) -> None:
    if args.revision and Path(source).expanduser().exists():
        raise UsageError(f"--revision is for Hub ids; {source} is a local file or folder")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


# ---- convert, info, doctor, cache ---------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    from ..weights.loader import export

    _no_revision_for_local(args, args.source)
    out = export(
        args.source,
        args.output,
        revision=args.revision,
        local_files_only=args.offline,
        dtype=args.dtype,
    )
    print(f"wrote {out} ({_mb(out.stat().st_size)})", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..weights.storage import read_header

    _no_revision_for_local(args, args.source)
    model = load(args.source, revision=args.revision, local_files_only=args.offline)
    if args.tensors:
        print(inside.weight_tree(model))
        return 0
    f = model._file
    # Every tensor of the file, once (a projector tied to the word embeddings is not stored);
    # "heads." holds the task heads and BERT's pooler, beyond the encoder.
    # The scales of a small-weights file's int8 matrices are not parameters.
    tensors = read_header(f.path).tensors
    shapes = {name: i.shape for name, i in tensors.items() if not name.endswith(".scale")}
    heads = sum(int(np.prod(s)) for name, s in shapes.items() if name.startswith("heads."))
    print(
        json.dumps(
            {
                "path": str(f.path),
                "size_mb": round(f.size_bytes / 1e6, 1),
                "dtype": f.dtype,
                "tensors": f.n_tensors,
                "parameters": sum(int(np.prod(s)) for s in shapes.values()),
                "head_parameters": heads,
                "task_heads": list(model.task_heads),
                "tokenizer": model._tokenizer is not None,
                "source": f.source,
                "config": model.config.to_dict(),
                "sentence_transformers": _describe(model) if f.sentence else None,
            },
            indent=2,
        )
    )
    return 0


def _describe(model: DistilBert) -> dict[str, Any]:
    """A sentence-transformers model's modules and settings, as JSON."""
    s = model.sentence_modules
    modules: list[dict[str, Any]] = []
    for m in s.modules:
        if isinstance(m, Pooling):
            modules.append(
                {"type": "Pooling", "modes": m.modes, "include_prompt": m.include_prompt}
            )
        elif isinstance(m, Dense):
            n_in, n_out = m.linear.weight.shape
            modules.append({"type": "Dense", "in": n_in, "out": n_out, "activation": m.activation})
        else:
            modules.append({"type": type(m).__name__})
    return {
        "modules": modules,
        "max_seq_length": model.max_seq_length,
        "embedding_dimension": model.get_sentence_embedding_dimension(),
        "similarity_fn_name": model.similarity_fn_name,
        "prompts": model.prompts,
        "default_prompt_name": model.default_prompt_name,
    }


def _doctor(args: argparse.Namespace) -> int:
    from ..system import report

    print(report(measure=not args.no_measure))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from ..weights import cache
    from ..weights.loader import cache_root

    root = cache_root()
    if args.action == "list":
        entries = cache.entries(root)
        print(f"npdistil cache: {root}")
        for e in entries:
            why = f" ({e.why})" if e.why else ""
            print(f"{_mb(e.size):>10}  {e.state:<9}  {e.source}{why}  {e.path.relative_to(root)}")
        spare = sum(e.size for e in entries if e.state in cache.PRUNABLE)
        print(
            f"{_mb(sum(e.size for e in entries)):>10}  in {len(entries)} file(s); "
            f"{_mb(spare)} can go with `npdistil cache prune`"
        )
        return 0
    gone = cache.prune(root, dry_run=args.dry_run) if args.action == "prune" else cache.clear(root)
    verb = "would remove" if getattr(args, "dry_run", False) else "removed"
    for e in gone:
        print(f"{verb} {e.path.relative_to(root)} ({_mb(e.size)}, {e.state}: {e.why or e.source})")
    print(f"{verb} {len(gone)} file(s), {_mb(sum(e.size for e in gone))}")
    return 0


# ---- embed: reading texts -----------------------------------------------------------------------


class _Text(NamedTuple):
    id: Any  # the line number (1-based), a .jsonl record's id field, or the argument's position
    where: str  # for messages: "file:line" or "argument N"
    text: str
    pair: str | None = None  # a task's second text (.jsonl --pair-field / --question-field)


class _Input:
    """The texts of a run, streamed: from the arguments, a file, or stdin."""

    def __init__(self, args: argparse.Namespace, fmt: str) -> None:
        self.args, self.fmt, self.blank = args, fmt, 0
        self.total: int | None = len(args.texts) if args.texts else None
        self.file: BinaryIO | None = None
        if args.input == "-":
            self.name, self.file = "<stdin>", sys.stdin.buffer
        elif args.input is not None:
            self.name = args.input
            try:
                self.file = open(args.input, "rb")  # noqa: SIM115 (closed by close)
            except OSError as exc:
                raise InputError(f"{args.input}: can't read ({exc.strerror})") from None

    def close(self) -> None:
        if self.file is not None and self.file is not sys.stdin.buffer:
            self.file.close()

    def count(self) -> None:
        """Count the texts of a regular file beforehand (for the progress bar's total)."""
        if self.file is None or not Path(self.name).is_file():
            return
        with open(self.name, "rb") as f:
            lines = _decoded_lines(f, self.name, self.args.encoding or "utf-8", "replace")
            self.total = sum(1 for _, line in lines if line.strip())

    def __iter__(self) -> Iterator[_Text]:
        if self.file is None:
            for n, text in enumerate(self.args.texts, start=1):
                yield _Text(n, f"argument {n}", text)
            return
        encoding, errors = self.args.encoding or "utf-8", self.args.errors or "strict"
        field, id_field = self.args.field or "text", self.args.id_field or "id"
        for n, line in _decoded_lines(self.file, self.name, encoding, errors):
            where = f"{self.name}:{n}"
            if not line.strip():  # one rule for both formats: blank lines are skipped
                self.blank += 1
                continue
            if self.fmt == "txt":
                yield _Text(n, where, line)
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{where}: not valid JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise InputError(f"{where}: no string field {field!r}")
            pair_field = getattr(self.args, "pair_field", None)
            if pair_field is not None and not isinstance(record.get(pair_field), str):
                raise InputError(f"{where}: no string field {pair_field!r}")
            pair = None if pair_field is None else record[pair_field]
            yield _Text(record.get(id_field, n), where, record[field], pair)


def _decoded_lines(f: BinaryIO, name: str, encoding: str, errors: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of a binary file, decoded as it is read.

    Decoding is incremental, so any encoding works (UTF-16 too), and a byte that can't be
    decoded is an InputError naming the file and line. A UTF-8 byte order mark is dropped.
    """
    utf8 = codecs.lookup(encoding).name == "utf-8"
    decoder = codecs.getincrementaldecoder("utf-8-sig" if utf8 else encoding)(errors)
    n, pending = 1, ""
    for raw in itertools.chain(f, [None]):
        try:
            pending += decoder.decode(b"", final=True) if raw is None else decoder.decode(raw)
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.end].hex(" ")
            raise InputError(
                f"{name}:{n}: not valid {encoding} (bytes {bad}: "
                f"{exc.reason}); give its encoding with --encoding, or --errors replace"
            ) from None
        *lines, pending = pending.split("\n")
        for line in lines:
            yield n, line.removesuffix("\r")
            n += 1
    if pending:
        yield n, pending.removesuffix("\r")


# ---- embed: checking the command line -----------------------------------------------------------


def _check_texts_or_input(args: argparse.Namespace) -> None:
    if bool(args.texts) == (args.input is not None):
        raise UsageError("give texts as arguments or --input FILE (- for stdin), one of the two")


def _check_input(args: argparse.Namespace) -> str | None:
    """Refuse input options that would be ignored; the input format (None: arguments)."""
    in_fmt = _input_format(args) if args.input is not None else None
    for flag, given in (
        ("--input-format", args.input_format),
        ("--encoding", args.encoding),
        ("--errors", args.errors),
    ):
        if given and args.input is None:
            raise UsageError(f"{flag} applies to --input")
    for flag, given in (
        ("--field", args.field),
        ("--id-field", args.id_field),
        ("--pair-field", getattr(args, "pair_field", None)),
    ):
        if given and in_fmt != "jsonl":
            raise UsageError(f"{flag} applies to .jsonl input")
    return in_fmt


def _input_format(args: argparse.Namespace) -> str:
    if args.input_format or args.input == "-":
        return args.input_format or "txt"
    suffix = Path(args.input).suffix.lower()
    if suffix not in _INPUT_SUFFIXES:
        raise UsageError(
            f"{args.input}: npdistil reads .txt (one text per line) and .jsonl files, not "
            f"{suffix}; convert it to one of them, or pass --input-format txt or jsonl"
        )
    return _INPUT_SUFFIXES[suffix]


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
    _check_texts_or_input(args)
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
    _no_revision_for_local(args, args.model)
    in_fmt = _check_input(args)
    if args.format and args.output is None:
        raise UsageError("--format applies to --output")
    out_fmt = _output_format(args) if args.output is not None else None
    if out_fmt == "npy" and kind != "sentence":
        raise UsageError(f"npy output holds sentence embeddings only; use npz or jsonl for {kind}")
    if out_fmt in ("npy", "npz") and args.output == "-" and sys.stdout.isatty():
        raise UsageError(f"{out_fmt} is binary: not written to a terminal")
    return in_fmt, out_fmt


# ---- embed --------------------------------------------------------------------------------------


def _embed(args: argparse.Namespace) -> int:
    in_fmt, out_fmt = _check_embed(args)
    kind = args.output_value
    options: dict[str, Any] = {
        "batch_size": args.batch_size,
        "output_value": _OUTPUT_VALUES[kind],
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
    texts = _Input(args, in_fmt or "txt")  # opened first: a missing file fails at once
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
    model: DistilBert, texts: _Input, chunk_size: int, options: dict[str, Any], bar: _Progress
) -> Iterator[tuple[list[_Text], Any]]:
    """Each ``chunk_size`` texts with their results, in order; messages about a text name its
    file and line (or argument) instead of its index in the chunk."""
    stream = iter(texts)
    while chunk := list(itertools.islice(stream, chunk_size)):
        on_batch = bar.batch_done(len(chunk))
        results = _located(
            functools.partial(_encode_texts, options=options, on_batch=on_batch), model, chunk
        )
        bar.chunk_done(len(chunk))
        yield chunk, results


def _encode_texts(
    model: DistilBert,
    chunk: list[_Text],
    *,
    options: dict[str, Any],
    on_batch: Callable[[int, int], None],
) -> Any:
    return model.encode([t.text for t in chunk], **options, on_batch=on_batch)


def _locate(message: str, wheres: list[str]) -> str:
    """``text 3`` (an index into the chunk) -> ``corpus.txt:17`` (where that text came from)."""

    def name(m: re.Match[str]) -> str:
        i = int(m[1])
        return wheres[i] if i < len(wheres) else m[0]

    return re.sub(r"\btext (\d+)\b", name, message)


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


def _print_results(chunk: list[_Text], results: Any, kind: str) -> None:
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


# ---- looking inside: trace, attention ------------------------------------------------------------


def _inside_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "trace",
        parents=[hub],
        help="run one text through the textbook forward pass, printing every stage",
    )
    t.add_argument("text", help="the text to trace")
    _model_option(t)

    a = sub.add_parser("attention", parents=[hub], help="show one text's attention probabilities")
    a.add_argument("text", help="the text to look at")
    _model_option(a)
    a.add_argument("--layer", type=int, default=0, help="layer, from 0 (default: %(default)s)")
    a.add_argument("--head", type=int, help="one head, from 0 (default: every head of the layer)")
    a.add_argument("--png", type=Path, help="also draw the heads as a PNG (needs matplotlib)")


def _model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id, local checkpoint folder or npdistil file (default: %(default)s)",
    )


def _trace(args: argparse.Namespace) -> int:
    _no_revision_for_local(args, args.model)
    model = load(args.model, revision=args.revision, local_files_only=args.offline)
    print(inside.format_trace(inside.trace(model, args.text)))
    return 0


def _attention(args: argparse.Namespace) -> int:
    _no_revision_for_local(args, args.model)
    model = load(args.model, revision=args.revision, local_files_only=args.offline)
    c = model.config
    if not 0 <= args.layer < c.n_layers:
        raise InputError(f"--layer {args.layer}: the model has layers 0..{c.n_layers - 1}")
    if args.head is not None and not 0 <= args.head < c.n_heads:
        raise InputError(f"--head {args.head}: the model has heads 0..{c.n_heads - 1}")
    tokens, attentions = inside.attentions(model, args.text)
    heads = range(c.n_heads) if args.head is None else [args.head]
    for h in heads:
        title = f"layer {args.layer}, head {h} (rows: queries, columns: keys)"
        print(inside.attention_map(attentions[args.layer][h], tokens, title) + "\n")
    print("shades: ' ' < 0.1 <= '.' < 0.2 <= ':' ... '%' < 0.9 <= '@'")
    if args.png is not None:
        names = [f"layer {args.layer}, head {h}" for h in heads]
        inside.attention_png(
            args.png, attentions[args.layer][list(heads)], tokens, args.text, names
        )
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


# ---- task heads: fill-mask, classify, entities, answer -----------------------------------------


def _task_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    """The task commands share how texts come in (arguments, a file or stdin, as for embed)
    and go out: one JSON line per text, ``{"id": ..., "result": ...}``, the result as the
    Python method returns it (transformers' pipeline keys)."""
    texts = _Parser(add_help=False)
    _model_option(texts)
    _input_options(texts)
    texts.add_argument("--output", help="write JSON Lines to this file (default: stdout)")

    f = sub.add_parser(
        "fill-mask", parents=[hub, texts], help="the likeliest tokens for each [MASK] of texts"
    )
    f.add_argument("texts", nargs="*", help="texts with the model's mask token ([MASK])")
    f.add_argument("--top-k", type=_positive, default=5, help="(default: %(default)s)")
    f.add_argument(
        "--target", action="append", help="only this token as a candidate (repeat for more)"
    )

    c = sub.add_parser("classify", parents=[hub, texts], help="label texts (or text pairs)")
    c.add_argument("texts", nargs="*", help="texts to classify")
    c.add_argument("--top-k", type=_top_k, default=1, help="labels per text, or all")
    c.add_argument("--function-to-apply", choices=["softmax", "sigmoid", "none"])
    c.add_argument("--pair-field", help=".jsonl input: each text's pair (e.g. a hypothesis)")

    n = sub.add_parser("entities", parents=[hub, texts], help="named entities (token tags)")
    n.add_argument("texts", nargs="*", help="texts to tag")
    n.add_argument(
        "--aggregation-strategy",
        choices=["none", "simple", "first", "average", "max"],
        default="simple",
        help="none: every word piece; others: entity groups (default: %(default)s)",
    )
    n.add_argument(
        "--ignore-label",
        action="append",
        help="a tag left out (repeat for more; default: O); --ignore-label '' keeps every tag",
    )
    n.add_argument(
        "--stride", type=_count, help="tag long texts whole, in windows sharing this many tokens"
    )

    a = sub.add_parser(
        "answer", parents=[hub, texts], help="extract answers to a question from contexts"
    )
    a.add_argument("texts", nargs="*", help="contexts (with --question)")
    a.add_argument("--question", help="the question asked of every context")
    a.add_argument(
        "--question-field", help=".jsonl input: each context's question (default: question)"
    )
    a.add_argument("--top-k", type=_positive, default=1, help="answers per context")
    a.add_argument("--max-answer-len", type=_positive, help="in tokens (default: 15)")
    a.add_argument("--doc-stride", type=_count, help="tokens shared by a long context's windows")
    a.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        help="an empty answer when the model finds none",
    )


def _input_options(parser: argparse.ArgumentParser) -> None:
    """Where texts come from, for embed and the task commands alike (read by ``_Input``)."""
    parser.add_argument(
        "--input",
        help="a .txt file (one text per line) or .jsonl file (see --field); - for stdin",
    )
    parser.add_argument(
        "--input-format", choices=["txt", "jsonl"], help="default: from the --input suffix"
    )
    parser.add_argument("--field", help="the text field of .jsonl input (default: text)")
    parser.add_argument(
        "--id-field", help="the id field of .jsonl input (default: id, else the line number)"
    )
    parser.add_argument("--encoding", type=_encoding, help="of --input (default: utf-8)")
    parser.add_argument(
        "--errors",
        choices=_ERRORS,
        help="bytes --input can't decode: strict (an error, the default), replace, ...",
    )


def _top_k(text: str) -> int | None:
    return None if text == "all" else _positive(text)


def _task(args: argparse.Namespace, run: Callable[[DistilBert, list[_Text]], list[Any]]) -> int:
    """Read texts, run ``run`` on them a chunk at a time, write one JSON line per text."""
    _check_texts_or_input(args)
    in_fmt = _check_input(args)
    _no_revision_for_local(args, args.model)
    texts = _Input(args, in_fmt or "txt")
    try:
        model = load(args.model, revision=args.revision, local_files_only=args.offline)
        to_file = args.output not in (None, "-")
        with contextlib.ExitStack() as stack:
            if to_file:
                from ..weights.storage import is_regular_target, open_replacing

                if is_regular_target(args.output):
                    out = stack.enter_context(open_replacing(Path(args.output)))
                else:
                    out = stack.enter_context(open(args.output, "wb"))
            else:
                out = sys.stdout.buffer
            n = 0
            stream = iter(texts)
            while chunk := list(itertools.islice(stream, 256)):
                for t, result in zip(chunk, _located(run, model, chunk), strict=True):
                    record = {"id": t.id, "result": result}
                    out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                    n += 1
                out.flush()
        if to_file:
            print(f"wrote {n} result(s) to {args.output}", file=sys.stderr)
    finally:
        texts.close()
    return 0


def _located(
    run: Callable[[DistilBert, list[_Text]], Any], model: DistilBert, chunk: list[_Text]
) -> Any:
    """``run`` on a chunk, its errors and warnings naming each text's file and line."""
    wheres = [t.where for t in chunk]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = run(model, chunk)
        except (InputError, InputTypeError) as exc:
            raise type(exc)(_locate(str(exc), wheres)) from None
    for w in caught:
        print(f"npdistil: warning: {_locate(str(w.message), wheres)}", file=sys.stderr)
    return results


def _fill_mask(args: argparse.Namespace) -> int:
    def run(model: DistilBert, chunk: list[_Text]) -> list[Any]:
        texts = [t.text for t in chunk]
        return model.fill_mask(texts, top_k=args.top_k, targets=args.target)

    return _task(args, run)


def _classify(args: argparse.Namespace) -> int:
    def run(model: DistilBert, chunk: list[_Text]) -> list[Any]:
        pairs = None if args.pair_field is None else [str(t.pair) for t in chunk]
        return model.classify(
            [t.text for t in chunk],
            pairs,
            top_k=args.top_k,
            function_to_apply=args.function_to_apply,
        )

    return _task(args, run)


def _entities(args: argparse.Namespace) -> int:
    ignore = ["O"] if args.ignore_label is None else [t for t in args.ignore_label if t]

    def run(model: DistilBert, chunk: list[_Text]) -> list[Any]:
        return model.entities(
            [t.text for t in chunk],
            aggregation_strategy=args.aggregation_strategy,
            ignore_labels=ignore,
            stride=args.stride,
        )

    return _task(args, run)


def _answer(args: argparse.Namespace) -> int:
    if args.question_field and args.question:
        raise UsageError("give --question or --question-field, not both")
    if args.input is not None and args.question is None and _input_format(args) == "jsonl":
        args.pair_field = args.question_field or "question"
    elif args.question is None:
        raise UsageError("give the question: --question TEXT (or .jsonl input with a question)")
    elif args.question_field:
        raise UsageError("--question-field applies to .jsonl input")
    else:
        args.pair_field = None
    options: dict[str, Any] = {"top_k": args.top_k}
    if args.max_answer_len is not None:
        options["max_answer_len"] = args.max_answer_len
    if args.doc_stride is not None:
        options["doc_stride"] = args.doc_stride
    if args.handle_impossible_answer:
        options["handle_impossible_answer"] = True

    def run(model: DistilBert, chunk: list[_Text]) -> list[Any]:
        questions = [args.question if t.pair is None else t.pair for t in chunk]
        return list(model.answer(questions, [t.text for t in chunk], **options))

    return _task(args, run)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "embed": _embed,
    "convert": _convert,
    "info": _info,
    "doctor": _doctor,
    "cache": _cache,
    "trace": _trace,
    "attention": _attention,
    "fill-mask": _fill_mask,
    "classify": _classify,
    "entities": _entities,
    "answer": _answer,
}

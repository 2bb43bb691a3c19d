"""What the commands share: the parser, the Hub options, the model option, and where texts come
from (arguments, a .txt or .jsonl file, or stdin), read as a stream and named by file and line
in every message."""

from __future__ import annotations

import argparse
import codecs
import itertools
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NoReturn

from ..api import Model
from ..errors import InputError, InputTypeError
from ..weights.loader import DEFAULT_MODEL

INPUT_SUFFIXES = {".txt": "txt", ".text": "txt", "": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl"}
ERRORS = ("strict", "replace", "ignore", "backslashreplace")


class UsageError(Exception):
    """A command line that can't be run as given (exit status 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def top_k(text: str) -> int | None:
    return None if text == "all" else positive(text)


def encoding(text: str) -> str:
    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {text!r}") from None
    return text


def hub_options() -> argparse.ArgumentParser:
    """``--revision`` and ``--offline``, for every command that loads a model."""
    hub = Parser(add_help=False)
    hub.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    hub.add_argument(
        "--offline",
        action="store_true",
        help="use only what is cached; make no network request (sets HF_HUB_OFFLINE=1)",
    )
    return hub


def model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hub id, local checkpoint folder or npdistil file (default: %(default)s)",
    )


def no_revision_for_local(args: argparse.Namespace, source: str) -> None:
    if args.revision and Path(source).expanduser().exists():
        raise UsageError(f"--revision is for Hub ids; {source} is a local file or folder")


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


# ---- where texts come from ----------------------------------------------------------------------


def input_options(parser: argparse.ArgumentParser) -> None:
    """Where texts come from, for embed and the task commands alike (read by ``Input``)."""
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
    parser.add_argument("--encoding", type=encoding, help="of --input (default: utf-8)")
    parser.add_argument(
        "--errors",
        choices=ERRORS,
        help="bytes --input can't decode: strict (an error, the default), replace, ...",
    )


class Text(NamedTuple):
    id: Any  # the line number (1-based), a .jsonl record's id field, or the argument's position
    where: str  # for messages: "file:line" or "argument N"
    text: str
    pair: str | None = None  # a task's second text (.jsonl --pair-field / --question-field)


class Input:
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
            lines = decoded_lines(f, self.name, self.args.encoding or "utf-8", "replace")
            self.total = sum(1 for _, line in lines if line.strip())

    def __iter__(self) -> Iterator[Text]:
        if self.file is None:
            for n, text in enumerate(self.args.texts, start=1):
                yield Text(n, f"argument {n}", text)
            return
        encoding, errors = self.args.encoding or "utf-8", self.args.errors or "strict"
        field, id_field = self.args.field or "text", self.args.id_field or "id"
        for n, line in decoded_lines(self.file, self.name, encoding, errors):
            where = f"{self.name}:{n}"
            if not line.strip():  # one rule for both formats: blank lines are skipped
                self.blank += 1
                continue
            if self.fmt == "txt":
                yield Text(n, where, line)
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
            yield Text(record.get(id_field, n), where, record[field], pair)


def decoded_lines(f: BinaryIO, name: str, encoding: str, errors: str) -> Iterator[tuple[int, str]]:
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


def check_texts_or_input(args: argparse.Namespace) -> None:
    if bool(args.texts) == (args.input is not None):
        raise UsageError("give texts as arguments or --input FILE (- for stdin), one of the two")


def check_input(args: argparse.Namespace) -> str | None:
    """Refuse input options that would be ignored; the input format (None: arguments)."""
    in_fmt = input_format(args) if args.input is not None else None
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


def input_format(args: argparse.Namespace) -> str:
    if args.input_format or args.input == "-":
        return args.input_format or "txt"
    suffix = Path(args.input).suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UsageError(
            f"{args.input}: npdistil reads .txt (one text per line) and .jsonl files, not "
            f"{suffix}; convert it to one of them, or pass --input-format txt or jsonl"
        )
    return INPUT_SUFFIXES[suffix]


# ---- naming a text by its file and line ---------------------------------------------------------


def located(run: Callable[[Model, list[Text]], Any], model: Model, chunk: list[Text]) -> Any:
    """``run`` on a chunk, its errors and warnings naming each text's file and line."""
    wheres = [t.where for t in chunk]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = run(model, chunk)
        except (InputError, InputTypeError) as exc:
            raise type(exc)(locate(str(exc), wheres)) from None
    for w in caught:
        print(f"npdistil: warning: {locate(str(w.message), wheres)}", file=sys.stderr)
    return results


def locate(message: str, wheres: list[str]) -> str:
    """``text 3`` (an index into the chunk) -> ``corpus.txt:17`` (where that text came from)."""

    def name(m: re.Match[str]) -> str:
        i = int(m[1])
        return wheres[i] if i < len(wheres) else m[0]

    return re.sub(r"\btext (\d+)\b", name, message)

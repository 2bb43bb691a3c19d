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
import contextlib
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import NpdistilError
from ..system import version
from . import embed, files, inside, serve, system, tasks
from .options import Parser, UsageError, hub_options

__all__ = ["main"]

log = logging.getLogger("npdistil")

_SIGPIPE_STATUS = 128 + 13
# Each family of commands adds its own (``add_parsers``), in the order --help lists them.
_FAMILIES = (embed, files, system, inside, tasks, serve)


class _Version(argparse.Action):
    """``--version``, read from pip's metadata only when asked (it takes ~20 ms)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        parser.exit(0, f"npdistil {version()}\n")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="npdistil", description="DistilBERT, BERT, RoBERTa and MPNet inference in pure NumPy."
    )
    p.add_argument("--version", action=_Version, nargs=0, help="print npdistil's version")
    sub = p.add_subparsers(dest="command", required=True)
    hub = hub_options()
    for family in _FAMILIES:
        family.add_parsers(sub, hub)
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
            status = args.run(args)
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

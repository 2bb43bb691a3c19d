"""``npdistil doctor``: what npdistil runs on (NumPy, its BLAS, the kernel and threads), with a
short matrix-product measurement."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    d = sub.add_parser(
        "doctor", help="what npdistil runs on: NumPy, BLAS, its kernel and threads, measured"
    )
    d.add_argument(
        "--no-measure", action="store_true", help="skip the two-second matrix-product measurement"
    )

    d.set_defaults(run=doctor)


def doctor(args: argparse.Namespace) -> int:
    from ..system import report

    print(report(measure=not args.no_measure))
    return 0

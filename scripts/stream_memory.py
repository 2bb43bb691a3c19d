"""Peak memory of `npdistil embed --input FILE --output FILE.npy` as the input grows.

    python scripts/stream_memory.py [--model tests/fixtures/tiny] [--lines 10000 100000 1000000]

Each run is a fresh process; its peak resident memory comes from getrusage(RUSAGE_CHILDREN),
read after it exits. A flat column means the stream is embedded in bounded memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "DistilBERT",
    "embeds",
    "every",
    "line",
]


def write_corpus(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            k = 3 + i % 11
            f.write(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(k)) + f" {i}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tests/fixtures/tiny")
    p.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = p.parse_args()
    print(f"{'lines':>10} {'peak RSS (MB)':>14} {'seconds':>8} {'lines/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lines:
            src, out = Path(tmp) / f"in{n}.txt", Path(tmp) / f"out{n}.npy"
            write_corpus(src, n)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "npdistil.cli",
                    "embed",
                    "--model",
                    args.model,
                    "--input",
                    str(src),
                    "--output",
                    str(out),
                    "--no-progress",
                ],
                check=True,
            )
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # ru_maxrss of children is the largest of any child so far: report it per run only
            # when it grew; runs are in increasing size, so a flat column means bounded memory.
            print(
                f"{n:>10,} {max(peak, before) / 1024:>14.1f} {seconds:>8.1f} {n / seconds:>9,.0f}"
            )
            out.unlink()


if __name__ == "__main__":
    main()

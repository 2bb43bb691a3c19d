"""The README and docs/ keep their promises: every relative link leads to a file (and to a
heading, where it names one), and every ``console`` example runs and prints what the page shows.

(The ``>>>`` examples of README.md and docs/*.md run as doctests: see pyproject.toml.)
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _ids(pages: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages]


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base, n = slug(heading), 0
        while (name := base if n == 0 else f"{base}-{n}") in found:  # repeated headings: -1, -2
            n += 1
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(FENCE.sub("", page.read_text()))
        if not re.match(r"[a-z]+:", target)  # http:, https:, mailto:
    ]


def test_slug_is_githubs():
    assert slug("Install and test") == "install-and-test"
    assert slug("OpenBLAS kernel and contention") == "openblas-kernel-and-contention"
    assert slug("`npdistil serve`: the server") == "npdistil-serve-the-server"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [no file](nope.md) [no heading](#nope)\n")
    assert links(page) == ["#title", "nope.md", "#nope"]
    assert anchors(page) == {"title"}


# ---- console examples -------------------------------------------------------------------------


def console_examples() -> list[tuple[str, str, str]]:
    """(page:line, command, expected output) for each ``$ npdistil ...`` of a console block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"^```console\n(.*?)^```", text, re.S | re.M):
            line = text[: block.start()].count("\n") + 2
            for m in re.finditer(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block[1], re.M):
                where = f"{page.relative_to(ROOT)}:{line + block[1][: m.start()].count(chr(10))}"
                found.append((where, m[1], m[2]))
    return found


EXAMPLES = console_examples()


def test_pages_have_console_examples():
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize(("where", "command", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_console_example_prints_what_the_page_shows(where, command, expected, tmp_path):
    argv = shlex.split(command, comments=True)
    assert argv[0] == "npdistil", f"{where}: a console example runs npdistil, not {argv[0]}"
    env = os.environ | {
        "NPDISTIL_CACHE": str(tmp_path / "cache"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "npdistil.cli", *argv[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"{where}: {command}\n{run.stderr}"
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    assert checker.check_output(expected, run.stdout, flags), (
        f"{where}: {command}\nthe page shows:\n{expected}\nit printed:\n{run.stdout}"
    )

"""Rule-based sentence splitters for npdistil.spark's ``sentences`` option, side by side.

    python benchmarks/sentence_splitters.py     # in a venv with the candidates installed:
    pip install pysbd sentencex nupunkt syntok  # (each is optional; missing ones are skipped)

What npdistil needs from a splitter: English sentences right on the cases that trip splitters
(abbreviations, initials, numbers, quotes, ellipses, lists, URLs), exact character spans into
the document (annotations carry ``begin``/``end``), speed next to the model (it must not show
in the embedding's time), and a small, kept-up, pure or wheel-only install.

Cases: the English "Golden Rules" that the Pragmatic Segmenter (the rule set behind Spark NLP's
SentenceDetector and pySBD) publishes as its test set, in substance, and cases from Python's
own documentation (this project's benchmark corpus: dotted names, versions, code). Each case
passes when the splitter returns exactly the expected sentences (compared stripped).
Spans: every sentence of every ``pydoc_data.topics`` paragraph checked against
``text[start:end]``, in order and without overlap. Speed: the whole corpus, best of 3.

Prints markdown; writes benchmarks/out/sentence_splitters.json.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import assets  # noqa: E402

Spans = list[tuple[int, int]]

# (text, expected sentences). After the Pragmatic Segmenter's English Golden Rules.
GOLDEN = [
    ("Hello World. My name is Jonas.", ["Hello World.", "My name is Jonas."]),
    ("What is your name? My name is Jonas.", ["What is your name?", "My name is Jonas."]),
    ("There it is! I found it.", ["There it is!", "I found it."]),
    ("My name is Jonas E. Smith.", ["My name is Jonas E. Smith."]),
    ("Please turn to p. 55.", ["Please turn to p. 55."]),
    ("Were Jane and co. at the party?", ["Were Jane and co. at the party?"]),
    (
        "They closed the deal with Pitt, Briggs & Co. at noon.",
        ["They closed the deal with Pitt, Briggs & Co. at noon."],
    ),
    ("Let's ask Jane and co. They should know.", ["Let's ask Jane and co.", "They should know."]),
    (
        "They closed the deal with Pitt, Briggs & Co. It closed yesterday.",
        ["They closed the deal with Pitt, Briggs & Co.", "It closed yesterday."],
    ),
    ("I can see Mt. Fuji from here.", ["I can see Mt. Fuji from here."]),
    (
        "St. Michael's Church is on 5th st. near the light.",
        ["St. Michael's Church is on 5th st. near the light."],
    ),
    ("That is JFK Jr.'s book.", ["That is JFK Jr.'s book."]),
    ("I visited the U.S.A. last year.", ["I visited the U.S.A. last year."]),
    ("I live in the E.U. How about you?", ["I live in the E.U.", "How about you?"]),
    ("I live in the U.S. How about you?", ["I live in the U.S.", "How about you?"]),
    (
        "I work for the U.S. Government in Virginia.",
        ["I work for the U.S. Government in Virginia."],
    ),
    ("I have lived in the U.S. for 20 years.", ["I have lived in the U.S. for 20 years."]),
    ("She has $100.00 in her bag.", ["She has $100.00 in her bag."]),
    ("She has $100.00. It is in her bag.", ["She has $100.00.", "It is in her bag."]),
    (
        "He teaches science (He previously worked for 5 years as an engineer.) at the local "
        "University.",
        [
            "He teaches science (He previously worked for 5 years as an engineer.) at the local "
            "University."
        ],
    ),
    (
        "Her email is Jane.Doe@example.com. I sent her an email.",
        ["Her email is Jane.Doe@example.com.", "I sent her an email."],
    ),
    (
        "The site is: https://www.example.50.com/new-site/awesome_content.html. Please check it "
        "out.",
        [
            "The site is: https://www.example.50.com/new-site/awesome_content.html.",
            "Please check it out.",
        ],
    ),
    (
        "She turned to him, 'This is great.' she said.",
        ["She turned to him, 'This is great.' she said."],
    ),
    (
        'She turned to him, "This is great." she said.',
        ['She turned to him, "This is great." she said.'],
    ),
    (
        'She turned to him, "This is great." She held the book out to show him.',
        ['She turned to him, "This is great."', "She held the book out to show him."],
    ),
    ("Hello!! Long time no see.", ["Hello!!", "Long time no see."]),
    ("Hello?? Who is there?", ["Hello??", "Who is there?"]),
    ("Hello!? Is that you?", ["Hello!?", "Is that you?"]),
    ("Hello?! Is that you?", ["Hello?!", "Is that you?"]),
    (
        "1.) The first item 2.) The second item",
        ["1.) The first item", "2.) The second item"],
    ),
    (
        "a. The first item b. The second item c. The third list item",
        ["a. The first item", "b. The second item", "c. The third list item"],
    ),
    (
        "This is a sentence\ncut off in the middle because pdf.",
        ["This is a sentence\ncut off in the middle because pdf."],
    ),
    ("It was a cold \nnight in the city.", ["It was a cold \nnight in the city."]),
    (
        "features\ncontact manager\nevents, activities\n",
        ["features", "contact manager", "events, activities"],
    ),
    (
        "You can find it at N°. 1026.253.553. That is where the treasure is.",
        ["You can find it at N°. 1026.253.553.", "That is where the treasure is."],
    ),
    (
        "She works at Yahoo! in the accounting department.",
        ["She works at Yahoo! in the accounting department."],
    ),
    (
        "We make a good team, you and I. Did you see Albert I. Jones yesterday?",
        ["We make a good team, you and I.", "Did you see Albert I. Jones yesterday?"],
    ),
    (
        "Thoreau argues that by simplifying one’s life, “the laws of the universe will appear "
        "less complex. . . .”",
        [
            "Thoreau argues that by simplifying one’s life, “the laws of the universe will "
            "appear less complex. . . .”"
        ],
    ),
    (
        "If words are left off at the end of a sentence, and that is all that is omitted, "
        "indicate the omission with ellipsis marks (preceded and followed by a space) and then "
        "indicate the end of the sentence with a period . . . . Next sentence.",
        [
            "If words are left off at the end of a sentence, and that is all that is omitted, "
            "indicate the omission with ellipsis marks (preceded and followed by a space) and "
            "then indicate the end of the sentence with a period . . . .",
            "Next sentence.",
        ],
    ),
    (
        "I never meant that.... She left the store.",
        ["I never meant that....", "She left the store."],
    ),
    (
        "I wasn’t really ... well, what I mean...see . . . what I'm saying, the thing is . . . I "
        "didn’t mean it.",
        [
            "I wasn’t really ... well, what I mean...see . . . what I'm saying, the thing is . . . "
            "I didn’t mean it."
        ],
    ),
    (
        "One further habit which was somewhat weakened . . . was that of combining words into "
        "self-interpreting compounds. . . . The practice was not abandoned. . . .",
        [
            "One further habit which was somewhat weakened . . . was that of combining words "
            "into self-interpreting compounds. . . .",
            "The practice was not abandoned. . . .",
        ],
    ),
    ("The U.S. is big. It has 50 states.", ["The U.S. is big.", "It has 50 states."]),
    (
        "Dr. Watson met Mrs. Hudson at 3 p.m. on Baker St.",
        ["Dr. Watson met Mrs. Hudson at 3 p.m. on Baker St."],
    ),
    (
        "This is e.g. an example, i.e. a case. Next one.",
        ["This is e.g. an example, i.e. a case.", "Next one."],
    ),
]

# Python's documentation: what this project's corpus is made of.
PYDOC = [
    (
        "Use os.path.join() to build paths. It works on every platform.",
        ["Use os.path.join() to build paths.", "It works on every platform."],
    ),
    (
        "New in version 3.11. The default is now True.",
        ["New in version 3.11.", "The default is now True."],
    ),
    (
        "See the sys.float_info attribute. It holds the limits, e.g. sys.float_info.max.",
        ["See the sys.float_info attribute.", "It holds the limits, e.g. sys.float_info.max."],
    ),
    (
        "The value 1.5e3 is a float. The value 0x1F is an int.",
        ["The value 1.5e3 is a float.", "The value 0x1F is an int."],
    ),
    (
        "Files ending in .pyc hold byte code. They are written by the compiler.",
        ["Files ending in .pyc hold byte code.", "They are written by the compiler."],
    ),
    (
        "This is the default (see PEP 8). Other styles work too.",
        ["This is the default (see PEP 8).", "Other styles work too."],
    ),
    (
        'Calling str.split() with no argument splits on whitespace. "a b".split() gives a list.',
        [
            "Calling str.split() with no argument splits on whitespace.",
            '"a b".split() gives a list.',
        ],
    ),
]


# ---- the candidates: text -> (start, end) spans ------------------------------------------------


def _pysbd() -> Callable[[str], Spans]:
    import pysbd

    seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
    return lambda text: [(s.start, s.end) for s in seg.segment(text)]


def _sentencex() -> Callable[[str], Spans]:
    import sentencex

    def spans(text: str) -> Spans:
        found = sentencex.get_sentence_boundaries("en", text)
        return [(b["start_index"], b["end_index"]) for b in found]

    return spans


def _nupunkt() -> Callable[[str], Spans]:
    import nupunkt

    return lambda text: [tuple(s) for s in nupunkt.sent_spans(text)]  # type: ignore[misc]


def _syntok() -> Callable[[str], Spans]:
    from syntok import segmenter

    def spans(text: str) -> Spans:
        out = []
        for paragraph in segmenter.analyze(text):
            for sentence in paragraph:
                first, last = sentence[0], sentence[-1]
                out.append((first.offset, last.offset + len(last.value)))
        return out

    return spans


def _regex() -> Callable[[str], Spans]:
    """The floor: split after . ! ? followed by space and a capital, or at line breaks."""
    boundary = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(]*[A-Z0-9])|\n+")

    def spans(text: str) -> Spans:
        out, start = [], 0
        for m in boundary.finditer(text):
            out.append((start, m.start()))
            start = m.end()
        out.append((start, len(text)))
        return [(a, b) for a, b in out if text[a:b].strip()]

    return spans


CANDIDATES = {
    "pysbd": ("pysbd", _pysbd),
    "sentencex": ("sentencex", _sentencex),
    "nupunkt": ("nupunkt", _nupunkt),
    "syntok": ("syntok", _syntok),
    "regex (no dependency)": (None, _regex),
}


def sentences(spans: Callable[[str], Spans], text: str) -> list[str]:
    return [s for a, b in spans(text) if (s := text[a:b].strip())]


def spans_faithful(spans: Callable[[str], Spans], texts: list[str]) -> tuple[int, int, str]:
    """(paragraphs whose spans are exact, paragraphs, first failure): in order, no overlap,
    and every non-space character of the text inside a span."""
    good, first = 0, ""
    for text in texts:
        found = spans(text)
        ok = all(0 <= a <= b <= len(text) for a, b in found)
        ok = ok and all(b1 <= a2 for (_, b1), (a2, _) in zip(found, found[1:], strict=False))
        covered = "".join(text[a:b] for a, b in found)
        ok = ok and re.sub(r"\s", "", covered) == re.sub(r"\s", "", text)
        good += ok
        if not ok and not first:
            first = repr(text[:80])
    return good, len(texts), first


def main() -> int:
    corpus = assets.corpus()
    chars = sum(map(len, corpus))
    report: dict[str, object] = {
        "python": platform.python_version(),
        "corpus": {"paragraphs": len(corpus), "characters": chars},
        "candidates": {},
    }
    rows = []
    for name, (package, make) in CANDIDATES.items():
        try:
            spans = make()
        except ImportError:
            print(f"(skipped {name}: not installed)", file=sys.stderr)
            continue
        version = metadata.version(package) if package else "-"
        golden = [sentences(spans, t) == want for t, want in GOLDEN]
        pydoc = [sentences(spans, t) == want for t, want in PYDOC]
        failed = [t for (t, _), ok in zip(GOLDEN + PYDOC, golden + pydoc, strict=True) if not ok]
        good, total, first_bad = spans_faithful(spans, corpus)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for text in corpus:
                spans(text)
            best = min(best, time.perf_counter() - start)
        result = {
            "version": version,
            "golden_rules": f"{sum(golden)}/{len(golden)}",
            "pydoc_cases": f"{sum(pydoc)}/{len(pydoc)}",
            "failed": failed,
            "spans_exact": f"{good}/{total}",
            "first_inexact_span": first_bad,
            "seconds": best,
            "chars_per_second": chars / best,
        }
        report["candidates"][name] = result  # type: ignore[index]
        rows.append(
            f"| {name} {version} | {result['golden_rules']} | {result['pydoc_cases']} | "
            f"{result['spans_exact']} | {chars / best / 1e6:.2f} M |"
        )
    out = HERE / "out" / "sentence_splitters.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"Corpus: {len(corpus):,} pydoc_data.topics paragraphs, {chars:,} characters.\n")
    print("| splitter | golden rules | Python docs cases | exact spans (paragraphs) | chars/s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sentences of a document, as character spans: the ``sentences`` option's splitter.

It is sentencex (Wikimedia's rule-based segmenter, ~300 languages, a compiled wheel without
dependencies), chosen by benchmarks/sentence_splitters.py over pySBD (the pragmatic segmenter's
Python port, which Spark NLP's SentenceDetector follows), nupunkt, syntok and a plain regular
expression: on the pragmatic segmenter's own English "Golden Rules" it got 43 of 45 right
(pySBD 42), all 7 cases from Python's documentation (pySBD 5), exact character spans on every
paragraph of the pydoc corpus (pySBD: one paragraph's spans wrong), at ~200x pySBD's speed;
and it is maintained (pySBD's last release is from 2021).
"""

from __future__ import annotations

import importlib.util

from ..errors import NpdistilError

__all__ = ["require", "split"]

_INSTALL = "pip install sentencex (or npdistil[spark], which brings it)"


def require() -> None:
    """On the driver: the splitter is installed, else a clear error before any task runs."""
    if importlib.util.find_spec("sentencex") is None:
        raise NpdistilError(f"DistilBertEmbeddings: sentences=True needs sentencex: {_INSTALL}")


def split(text: str, language: str = "en") -> list[tuple[int, int]]:
    """The sentences of ``text`` as ``(start, stop)`` character offsets, without the
    whitespace around them; none for a text of whitespace alone.

    >>> text = "Dr. Watson met Mrs. Hudson. They talked.  "
    >>> [text[a:b] for a, b in split(text)]
    ['Dr. Watson met Mrs. Hudson.', 'They talked.']
    """
    import sentencex  # an optional dependency: imported where it is used

    spans = []
    for boundary in sentencex.get_sentence_boundaries(language, text):
        start, stop = boundary["start_index"], boundary["end_index"]
        piece = text[start:stop]
        stripped = piece.strip()
        if stripped:
            start += len(piece) - len(piece.lstrip())
            spans.append((start, start + len(stripped)))
    return spans

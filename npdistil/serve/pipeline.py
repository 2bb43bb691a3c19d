"""The model's side of the server: requests become jobs (one token sequence each, tokenized in
the request's thread), the worker runs a batch of jobs through one packed forward pass, and
what comes out is finished per request (dimensions, unit length, scores).

The steps are ``model.encode``'s and ``model.classify``'s, cut where the queue goes between
them, so that the vectors are the ones they give: a text with its prompt is tokenized and
truncated at the model's ``max_seq_length`` as in ``encode``; the forward pass is
``model.forward_packed``, where each sequence's numbers are those it gets alone, whatever else
shares its batch; then pooling and the sentence-transformers modules, ``truncate_dim``
(``dimensions``) and L2 normalization, in ``encode``'s order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..api import Model
from ..model import transformer as M
from ..tasks.scores import sigmoid, softmax
from ..text import sentence as S
from ..text.tokenizer import Tokens, longest_first
from .protocol import ApiError, EmbedRequest, PredictRequest, RerankRequest, TokenizeRequest

__all__ = ["Job", "Pipeline"]

SENTENCE, TOKENS, LOGITS = "sentence", "tokens", "logits"


class Job(NamedTuple):
    """One input for the model."""

    ids: np.ndarray  # [n] token ids, special tokens included
    types: np.ndarray | None  # [n] token types (BERT classifiers), else None
    kind: str  # SENTENCE: a pooled vector; TOKENS: every token's vector; LOGITS: classifier
    skip: int = 0  # leading tokens pooling leaves out (a prompt, if the model says so)


class Pipeline:
    """A loaded model, ready to serve: how inputs become jobs, how a batch of jobs runs, and
    how results are finished."""

    def __init__(self, model: Model, max_input_tokens: int, auto_truncate: bool) -> None:
        self.model = model
        self.tok = model.tokenizer
        self.max_input_tokens = max_input_tokens
        self.auto_truncate = auto_truncate
        self.sentence = model.sentence_modules
        self.dimensions = model.get_sentence_embedding_dimension()
        self._skips: dict[str, int] = {}
        heads = model.heads
        self.classifier: M.SequenceClassificationHead | None = heads.sequence_classification
        self.labels: list[str] = []
        if self.classifier is not None:
            n = self.classifier.classifier.bias.shape[0]
            self.labels = [model.config.id2label.get(i, f"LABEL_{i}") for i in range(n)]

    # ---- before the model: in the request's thread -------------------------------------------

    def _prompt(self, name: str | None) -> str:
        """The prompt text put before each text, as ``encode`` resolves it: the named one, else
        the model's default, else none."""
        name = name if name is not None else self.model.default_prompt_name
        return self.model.prompts.get(name, "") if name is not None else ""

    def _skip(self, prompt: str) -> int:
        """Leading tokens pooling leaves out: the prompt's and [CLS], when the model pools
        without its prompt (sentence-transformers' ``include_prompt=False``)."""
        if not prompt or self.sentence.pooling.include_prompt:
            return 0
        if prompt not in self._skips:
            n_prompt = len(self.tok.tokenize(prompt)[0].ids)
            self._skips[prompt] = len(self.tok.prefix_ids) + n_prompt
        return self._skips[prompt]

    def _too_long(self, param: str, route_has_truncate: bool) -> ApiError:
        fix = (
            "send truncate: true, or shorten it"
            if route_has_truncate
            else "shorten it, or start the server with --auto-truncate"
        )
        return ApiError(
            422,
            f"{param} is longer than the {self.max_input_tokens} tokens this server runs "
            f"(special tokens included) and truncation is off: {fix}",
            param=param,
            code="input_too_long",
        )

    def text_jobs(self, req: EmbedRequest, field: str, kind: str, has_truncate: bool) -> list[Job]:
        """A job per input of an embedding request: its prompt and text tokenized (or its
        token ids taken as they are), cut at the server's input length, special tokens put
        around it."""
        tok = self.tok
        room = self.max_input_tokens - tok.n_special
        truncate = self.auto_truncate if req.truncate is None else req.truncate
        prompt = self._prompt(req.prompt_name)
        skip = self._skip(prompt)
        texts = [prompt + t for t in req.inputs if isinstance(t, str)]
        # Right truncation needs only the first room + 1 tokens of a long text.
        pieces = iter(
            tok.tokenize(texts, limit=None if req.truncate_left else room) if texts else []
        )
        jobs = []
        for i, item in enumerate(req.inputs):
            text = isinstance(item, str)
            ids = next(pieces).ids if text else np.asarray(item, dtype=np.int64)
            if len(ids) > room:
                if not truncate:
                    raise self._too_long(field if req.single else f"{field}[{i}]", has_truncate)
                ids = ids[len(ids) - room :] if req.truncate_left else ids[:room]
            seq = np.concatenate([tok.prefix_ids, ids, tok.suffix_ids]).astype(np.int64)
            jobs.append(Job(seq, None, kind, skip if text else 0))
        return jobs

    def pair_jobs(
        self,
        pairs: Sequence[tuple[str, str | None]],
        truncate: bool | None,
        left: bool,
        field: str,
        single: bool,
    ) -> list[Job]:
        """A classifier job per text or text pair, laid out as ``model.classify`` lays them out
        (``[CLS] a [SEP] b [SEP]``, token types 0 then 1), a pair too long cut longest first."""
        tok = self.tok
        truncate = self.auto_truncate if truncate is None else truncate
        limit_one = self.max_input_tokens - tok.n_special
        limit_two = self.max_input_tokens - tok.n_special_pair
        firsts = tok.tokenize([a for a, _ in pairs], limit=None if left else limit_one)
        seconds = iter(
            tok.tokenize([b for _, b in pairs if b is not None], limit=None if left else limit_two)
            if any(b is not None for _, b in pairs)
            else []
        )
        rows_a, rows_b, singles = [], [], []
        for i, ((_, b), a_tokens) in enumerate(zip(pairs, firsts, strict=True)):
            b_tokens = next(seconds) if b is not None else None
            if b_tokens is None:
                n_a, n_b = min(len(a_tokens.ids), limit_one), 0
                cut = n_a < len(a_tokens.ids)
            else:
                n_a, n_b = longest_first(len(a_tokens.ids), len(b_tokens.ids), limit_two)
                cut = n_a < len(a_tokens.ids) or n_b < len(b_tokens.ids)
            if cut and not truncate:
                raise self._too_long(field if single else f"{field}[{i}]", True)
            rows_a.append(_keep(a_tokens, n_a, left))
            rows_b.append(None if b_tokens is None else _keep(b_tokens, n_b, left))
            singles.append(b_tokens is None)
        jobs = []
        for row_a, row_b in zip(rows_a, rows_b, strict=True):
            batch = tok.pad([row_a]) if row_b is None else tok.pad([row_a], [row_b])
            n = int(batch.attention_mask[0].sum())
            types = None if batch.token_type_ids is None else batch.token_type_ids[0, :n]
            jobs.append(Job(batch.input_ids[0, :n], types, LOGITS))
        return jobs

    def tokenize(self, req: TokenizeRequest) -> list[list[dict[str, Any]]]:
        """TEI's ``/tokenize`` answer: each token's id, text, whether it is special, and its
        ``start``/``stop`` offsets into the (prompted) text, in UTF-8 bytes as TEI gives them."""
        tok = self.tok
        prompt = self._prompt(req.prompt_name)
        texts = [prompt + t for t in req.inputs]
        out = []
        for text, pieces in zip(texts, tok.tokenize(texts), strict=True):
            at = _byte_offsets(text)
            tokens = [
                {
                    "id": int(i),
                    "text": text[s:e],
                    "special": False,
                    "start": int(at[s]),
                    "stop": int(at[e]),
                }
                for i, (s, e) in zip(pieces.ids, pieces.offsets, strict=True)
            ]
            if req.add_special_tokens:
                tokens = _specials(tok.prefix_ids, tok.prefix_tokens) + tokens
                tokens += _specials(tok.suffix_ids, tok.suffix_tokens)
            out.append(tokens)
        return out

    # ---- the model: in the worker's thread ---------------------------------------------------

    def run(self, jobs: Sequence[Job]) -> list[np.ndarray]:
        """One packed forward pass over the jobs (all with token types, or all without), and
        what each job wants of it: a pooled vector after the sentence modules, every token's
        vector (a copy: the batch's array goes), or the classifier's logits."""
        types = None if jobs[0].types is None else [j.types for j in jobs if j.types is not None]
        hidden = self.model.forward_packed([j.ids for j in jobs], types)  # B x [n_i, D]
        out: list[np.ndarray] = [np.empty(0)] * len(jobs)
        sentences = [i for i, j in enumerate(jobs) if j.kind == SENTENCE]
        if sentences:
            modes = self.sentence.pooling.modes
            pooled = np.stack([S.pool([hidden[i]], modes, jobs[i].skip)[0] for i in sentences])
            vectors = S.run_modules(pooled, self.sentence.modules[1:])  # [n, E]
            for k, i in enumerate(sentences):
                out[i] = vectors[k]
        for i, job in enumerate(jobs):
            if job.kind == TOKENS:
                out[i] = np.array(hidden[i], dtype=np.float32)  # [n_i, D], its own memory
        classified = [i for i, j in enumerate(jobs) if j.kind == LOGITS]
        if classified:
            assert self.classifier is not None
            cls = np.stack([hidden[i][:1] for i in classified])  # the [CLS] tokens: [n, 1, D]
            logits = M.sequence_classification_logits(cls, self.classifier)  # [n, L]
            for k, i in enumerate(classified):
                out[i] = logits[k]
        return out

    # ---- after the model: in the request's thread --------------------------------------------

    def finish(self, vectors: Sequence[np.ndarray], req: EmbedRequest) -> np.ndarray:
        """Sentence vectors as asked: the first ``dimensions`` (else the model's
        ``truncate_dim``), then unit length if ``normalize``: [n, E] -> [n, k]."""
        x = np.stack(vectors)
        keep = req.dimensions if req.dimensions is not None else self.sentence.truncate_dim
        if keep is not None:
            x = x[:, :keep]
        return S.l2_normalize(x) if req.normalize else x

    def predictions(self, logits: np.ndarray, raw: bool) -> list[dict[str, Any]]:
        """One input's labels with their scores, best first (TEI's ``/predict``); scores as
        ``model.classify`` computes them by default (the config's problem type, else a softmax
        over several labels or a sigmoid for one), or the raw logits."""
        scores = logits.astype(np.float64) if raw else self._scores(logits)
        order = np.argsort(-scores, kind="stable")
        return [{"score": float(scores[i]), "label": self.labels[i]} for i in order]

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        problem = self.model.config.problem_type
        if problem == "regression":
            return logits.astype(np.float64)
        if problem == "multi_label_classification" or len(logits) == 1:
            return sigmoid(logits)
        return softmax(logits)

    def rank(self, logits: Sequence[np.ndarray], req: RerankRequest) -> list[dict[str, Any]]:
        """TEI's ``/rerank`` answer: the texts' indexes and scores (a sigmoid of the
        cross-encoder's logit, or the logit), best first."""
        raw = np.array([float(x[0]) for x in logits])
        scores = raw if req.raw_scores else sigmoid(raw)
        ranks = []
        for i in np.argsort(-scores, kind="stable"):
            rank: dict[str, Any] = {"index": int(i), "score": float(scores[i])}
            if req.return_text:
                rank["text"] = req.texts[i]
            ranks.append(rank)
        return ranks

    def predict_jobs(self, req: PredictRequest) -> list[Job]:
        return self.pair_jobs(req.inputs, req.truncate, req.truncate_left, "inputs", req.single)

    def rerank_jobs(self, req: RerankRequest) -> list[Job]:
        pairs: list[tuple[str, str | None]] = [(req.query, t) for t in req.texts]
        return self.pair_jobs(pairs, req.truncate, req.truncate_left, "texts", False)


def _keep(t: Tokens, n: int, left: bool) -> Tokens:
    """The first ``n`` pieces, or with ``left`` the last ``n``."""
    s = slice(len(t.ids) - n, None) if left else slice(0, n)
    return Tokens(t.ids[s], t.offsets[s], t.word_ids[s], t.tokens[s])


def _specials(ids: np.ndarray, tokens: list[str]) -> list[dict[str, Any]]:
    return [
        {"id": int(i), "text": t, "special": True, "start": None, "stop": None}
        for i, t in zip(ids, tokens, strict=True)
    ]


def _byte_offsets(text: str) -> np.ndarray:
    """For each character position 0..len(text), its offset in the UTF-8 bytes: [len + 1]."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    widths = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    return np.concatenate([[0], np.cumsum(widths)])

"""The routes: OpenAI's embeddings, TEI's routes, the probes and the metrics, on Starlette.

Every route answers errors in OpenAI's shape. A work route (one that reads a body and may run
the model) is admitted only while the server is not draining and has fewer than
``--max-concurrent-requests`` requests in flight; its body is read up to ``--payload-limit``;
checking, tokenizing and shaping large answers run in worker threads, so the event loop only
moves bytes and the queue. The probes (``/health``, ``/ready``) and ``/metrics`` need no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api import Model
from ..system import version
from . import openapi
from . import protocol as P
from .batching import Batcher
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import SENTENCE, TOKENS, Job, Pipeline
from .settings import Settings

__all__ = ["Service", "create_app"]

log = logging.getLogger("npdistil.serve")
T = TypeVar("T")

# Past the payload limit, a body is still read (and thrown away) up to this size, so that the
# client gets its 413 instead of a connection reset while it is still sending.
_DISCARD_LIMIT = 64 * 1024 * 1024
# Bodies up to this size are parsed and tokenized on the event loop (well under a millisecond).
_INLINE_BODY = 8 * 1024
# Answers holding more numbers than this are shaped in a worker thread, not on the event loop
# (about 8 ms of printing floats).
_INLINE_FLOATS = 32 * 1024


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def _json(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status, headers=headers, media_type="application/json")


def _error(exc: P.ApiError) -> Response:
    return _json(exc.body(), exc.status, exc.headers)


async def _disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    """Returns when the client disconnects (its body already read, the next ASGI message can
    only be ``http.disconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Service:
    """A model being served: its pipeline, queue, metrics and state (draining, in flight)."""

    def __init__(self, model: Model, settings: Settings) -> None:
        self.model, self.settings = model, settings
        self.name = settings.served_model_name
        limit = settings.max_input_tokens or model.max_seq_length
        self.pipeline = Pipeline(model, limit, settings.auto_truncate)
        self.metrics = Metrics()
        self.batcher = Batcher(
            self.pipeline.run,
            self.metrics,
            settings.max_batch_tokens,
            settings.max_batch_requests,
            settings.hold_file,
        )
        self.rules = P.Rules(
            max_client_batch_size=settings.max_client_batch_size,
            vocab_size=model.config.vocab_size,
            dimensions=self.pipeline.dimensions,
            prompts=tuple(model.prompts),
            accept_token_ids=settings.accept_token_ids,
        )
        key = settings.api_key
        # Both sides hashed first, so that the comparison takes as long whatever the length.
        self._key = hashlib.sha256(key.encode()).digest() if key else None
        self.in_flight = 0
        self.draining = False
        self.created = int(time.time())

    # ---- state, for the server's drain -----------------------------------------------------

    def begin_drain(self) -> None:
        """Stop admitting work (503) and report not ready; requests in flight go on."""
        self.draining = True

    def fail_queued(self) -> int:
        """A drain out of time: answer every queued input with 503."""
        return self.batcher.fail_queued(
            P.ApiError(503, "the server stopped before this request could run", code="shut_down")
        )

    # ---- the app ---------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.batcher.start()
            yield
            await self.batcher.close()

        work = [
            ("/v1/embeddings", "embeddings", self._openai),
            ("/embeddings", "embeddings", self._openai),
            ("/embed", "embed", self._embed),
            ("/embed_all", "embed_all", self._embed_all),
            ("/tokenize", "tokenize", self._tokenize),
            ("/predict", "predict", self._predict),
            ("/rerank", "rerank", self._rerank),
        ]
        reads = [
            ("/v1/models", "models", self._models, False),
            ("/info", "info", self._info, False),
            ("/openapi.json", "openapi", self._openapi, False),
            ("/health", "health", self._health, True),
            ("/ready", "ready", self._ready, True),
            ("/metrics", "metrics", self._metrics, True),
        ]
        routes = [
            Route(path, self._endpoint(name, fn, work=True), methods=["POST"])
            for path, name, fn in work
        ]
        routes += [
            Route(path, self._endpoint(name, fn, work=False, public=public), methods=["GET"])
            for path, name, fn, public in reads
        ]
        return Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={HTTPException: self._http_error, Exception: self._crash},
        )

    def _endpoint(
        self,
        name: str,
        handler: Callable[[Request], Awaitable[Response]],
        *,
        work: bool,
        public: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """The route's handler, behind the key check, admission, error shaping and metrics."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            admitted = False
            try:
                if not public:
                    self._authorize(request)
                if work:
                    self._admit()
                    admitted = True
                response = await handler(request)
            except P.ApiError as exc:
                response = _error(exc)
            except _ClientGone:
                response = Response(status_code=499)  # nginx's "client closed request"
            except Exception:
                # The whole traceback in the message: npdistil's log handler prints messages.
                where = f"{request.method} {request.url.path}"
                log.error(f"unexpected error on {where}:\n{traceback.format_exc()}")
                response = _error(
                    P.ApiError(500, "internal error (a bug in npdistil): see the server's log")
                )
            finally:
                if admitted:
                    self.in_flight -= 1
                    self.metrics.in_flight.add(-1)
            self.metrics.requests.inc(route=name, status=str(response.status_code))
            self.metrics.request_duration.observe(time.perf_counter() - started, route=name)
            return response

        return endpoint

    def _authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._key):
            raise P.ApiError(
                401,
                "missing or wrong API key: send the header Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _admit(self) -> None:
        if self.draining:
            raise P.ApiError(
                503,
                "the server is shutting down and takes no new work: retry on another replica",
                code="shutting_down",
                headers={"Retry-After": "1"},
            )
        limit = self.settings.max_concurrent_requests
        if self.in_flight >= limit:
            raise P.ApiError(
                429,
                f"the server is busy: {limit} requests in flight (--max-concurrent-requests); "
                "retry shortly",
                type="requests",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self.metrics.in_flight.add(1)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own errors (no such route, wrong method), in OpenAI's shape."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        what = {404: "no such route", 405: "method not allowed on this route"}.get(status, "error")
        message = f"{request.method} {request.url.path}: {what}"
        if status == 404:
            message += " (GET /openapi.json lists the routes)"
        self.metrics.requests.inc(route="other", status=str(status))
        return _error(P.ApiError(status, message, headers=headers))

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s: %r", request.method, request.url.path, exc)
        return _error(P.ApiError(500, "internal error (a bug in npdistil): see the server's log"))

    # ---- the steps of a work route ---------------------------------------------------------

    async def _read(self, request: Request) -> bytes:
        """The body, up to ``--payload-limit`` bytes (more: 413)."""
        limit = self.settings.payload_limit
        declared = request.headers.get("content-length", "")
        over = declared.isdigit() and int(declared) > limit
        chunks, size = [], 0
        if not (over and int(declared) > _DISCARD_LIMIT):
            async for chunk in request.stream():
                size += len(chunk)
                over = over or size > limit
                if over and size > _DISCARD_LIMIT:
                    break
                if not over:
                    chunks.append(chunk)
        if over:
            raise P.ApiError(
                413,
                f"request body is larger than this server takes ({limit} bytes, "
                "--payload-limit): send fewer or shorter inputs per request",
                code="payload_too_large",
            )
        return b"".join(chunks)

    async def _prepare(self, request: Request, make: Callable[[dict[str, Any]], T]) -> T:
        """Read the body, then parse, check and tokenize it (``make``): a small body right
        here, a large one in a worker thread, so that the event loop stays free for others."""
        body = await self._read(request)
        started = time.perf_counter()
        if len(body) <= _INLINE_BODY:  # a thread hop would cost more than the work
            result = make(P.parse_json(body))
        else:
            result = await run_in_threadpool(lambda: make(P.parse_json(body)))
        self.metrics.tokenization_duration.observe(time.perf_counter() - started)
        return result

    async def _model(self, request: Request, route: str, jobs: Sequence[Job]) -> list[np.ndarray]:
        """The jobs' results from the model; if the client disconnects first, its inputs still
        queued are dropped (they never cost a forward pass)."""
        self.metrics.inputs.inc(len(jobs), route=route)
        work = self.batcher.submit(jobs)
        gone: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on this request
            work.cancel()
            gone.cancel()
            raise
        gone.cancel()
        if work in done:
            return list(work.result())
        work.cancel()  # cancels its inputs still queued: the worker drops them
        raise _ClientGone

    async def _answer(self, floats: int, make: Callable[[], bytes]) -> Response:
        """Shape the answer: inline when small, in a worker thread when large (printing
        floats is what costs)."""
        return _json(make() if floats <= _INLINE_FLOATS else await run_in_threadpool(make))

    def _classifier(self, route: str, one_label: bool = False) -> None:
        labels = self.pipeline.labels
        if not labels:
            raise P.ApiError(
                404,
                f"POST /{route} needs a model with a sequence classification head (a "
                f"cross-encoder or a classifier); this server's model has none",
            )
        if one_label and len(labels) != 1:
            raise P.ApiError(
                404,
                f"POST /rerank needs a one-label classifier (a cross-encoder reranker); this "
                f"model's classifier has {len(labels)} labels ({', '.join(labels)}): use "
                "POST /predict",
            )

    # ---- work routes -----------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        def make(obj: dict[str, Any]) -> tuple[P.EmbedRequest, list[Job]]:
            req = P.parse_openai(obj, self.rules)
            return req, self.pipeline.text_jobs(req, "input", SENTENCE, has_truncate=False)

        req, jobs = await self._prepare(request, make)
        outs = await self._model(request, "embeddings", jobs)

        def answer() -> bytes:
            vectors = self.pipeline.finish(outs, req)
            tokens = sum(len(j.ids) for j in jobs)
            return P.dump(
                P.openai_embeddings(list(vectors), req.encoding_format, self.name, tokens)
            )

        return await self._answer(len(jobs) * self.pipeline.dimensions, answer)

    async def _embed(self, request: Request) -> Response:
        def make(obj: dict[str, Any]) -> tuple[P.EmbedRequest, list[Job]]:
            req = P.parse_embed(obj, self.rules)
            return req, self.pipeline.text_jobs(req, "inputs", SENTENCE, has_truncate=True)

        req, jobs = await self._prepare(request, make)
        outs = await self._model(request, "embed", jobs)
        return await self._answer(
            len(jobs) * self.pipeline.dimensions,
            lambda: P.dump(self.pipeline.finish(outs, req).tolist()),
        )

    async def _embed_all(self, request: Request) -> Response:
        def make(obj: dict[str, Any]) -> list[Job]:
            req = P.parse_embed(obj, self.rules, pooled=False)
            return self.pipeline.text_jobs(req, "inputs", TOKENS, has_truncate=True)

        jobs = await self._prepare(request, make)
        outs = await self._model(request, "embed_all", jobs)
        return await self._answer(
            sum(o.size for o in outs), lambda: P.dump([o.tolist() for o in outs])
        )

    async def _tokenize(self, request: Request) -> Response:
        def make(obj: dict[str, Any]) -> bytes:
            req = P.parse_tokenize(obj, self.rules)
            self.metrics.inputs.inc(len(req.inputs), route="tokenize")
            return P.dump(self.pipeline.tokenize(req))

        return _json(await self._prepare(request, make))

    async def _predict(self, request: Request) -> Response:
        self._classifier("predict")

        def make(obj: dict[str, Any]) -> tuple[P.PredictRequest, list[Job]]:
            req = P.parse_predict(obj, self.rules)
            return req, self.pipeline.predict_jobs(req)

        req, jobs = await self._prepare(request, make)
        outs = await self._model(request, "predict", jobs)
        answers = [self.pipeline.predictions(o, req.raw_scores) for o in outs]
        return _json(P.dump(answers[0] if req.single else answers))

    async def _rerank(self, request: Request) -> Response:
        self._classifier("rerank", one_label=True)

        def make(obj: dict[str, Any]) -> tuple[P.RerankRequest, list[Job]]:
            req = P.parse_rerank(obj, self.rules)
            return req, self.pipeline.rerank_jobs(req)

        req, jobs = await self._prepare(request, make)
        outs = await self._model(request, "rerank", jobs)
        return _json(P.dump(self.pipeline.rank(outs, req)))

    # ---- reads -----------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        model = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "npdistil",
        }
        return _json(P.dump({"object": "list", "data": [model]}))

    def info(self) -> dict[str, Any]:
        """TEI's ``/info`` fields, and npdistil's own (dimensions, prompts, payload limit)."""
        s, m, p = self.settings, self.model, self.pipeline
        kind: dict[str, Any]
        if p.labels:
            labels = {
                "id2label": dict(enumerate(p.labels)),
                "label2id": {n: i for i, n in enumerate(p.labels)},
            }
            kind = {"reranker" if len(p.labels) == 1 else "classifier": labels}
        else:
            kind = {"embedding": {"pooling": "+".join(m.sentence_modules.pooling.modes)}}
        return {
            "model_id": self.name,
            "model_sha": m.source.get("commit"),
            "model_dtype": m.dtype,
            "model_type": kind,
            "max_concurrent_requests": s.max_concurrent_requests,
            "max_input_length": p.max_input_tokens,
            "max_batch_tokens": s.max_batch_tokens,
            "max_batch_requests": s.max_batch_requests,
            "max_client_batch_size": s.max_client_batch_size,
            "auto_truncate": s.auto_truncate,
            "tokenization_workers": None,
            "version": version(),
            "sha": None,
            "docker_label": None,
            # npdistil's own
            "family": m.config.family,
            "dimensions": p.dimensions,
            "payload_limit": s.payload_limit,
            "prompts": m.prompts,
            "default_prompt_name": m.default_prompt_name,
            "accept_token_ids": s.accept_token_ids,
        }

    async def _info(self, request: Request) -> Response:
        return _json(P.dump(self.info()))

    async def _openapi(self, request: Request) -> Response:
        return _json(P.dump(openapi.document(self.name, version(), self._key is not None)))

    async def _health(self, request: Request) -> Response:
        if not self.batcher.alive:
            raise P.ApiError(503, "the model worker is not running", code="unhealthy")
        return _json(P.dump({"status": "ok"}))

    async def _ready(self, request: Request) -> Response:
        if self.draining:
            raise P.ApiError(503, "the server is draining: it takes no new work", code="draining")
        if not self.batcher.alive:
            raise P.ApiError(503, "the model worker is not running", code="unhealthy")
        return _json(P.dump({"status": "ready"}))

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def create_app(model: Model, settings: Settings | None = None) -> Starlette:
    """An ASGI app serving ``model`` (run it with any ASGI server; ``npdistil serve`` runs it
    with uvicorn and handles signals and draining)."""
    return Service(model, settings or Settings()).app()

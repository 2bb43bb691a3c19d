"""``npdistil serve``: the embedding server (OpenAI's and TEI's routes), for
``pip install "npdistil[serve]"``. The server package (Starlette, uvicorn) is imported only when
the command runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..api import load
from .options import UsageError, model_option, no_revision_for_local, positive

# Tests hold the model worker with this file (serve.Settings.hold_file); not a user option.
_HOLD_FILE_VARIABLE = "NPDISTIL_SERVE_HOLD_FILE"


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def add_parsers(sub: Any, hub: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "serve",
        parents=[hub],
        help="an embedding server for OpenAI and TEI clients (needs npdistil[serve])",
        description="Serve a model over HTTP: OpenAI's POST /v1/embeddings and "
        "text-embeddings-inference's routes (/embed, /embed_all, /tokenize, /predict, "
        "/rerank, /info), with /health, /ready and /metrics. SIGTERM or Ctrl+C drains it.",
    )
    s.set_defaults(run=serve)
    model_option(s)
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; 0.0.0.0 for every interface, as in "
        "a container)",
    )
    s.add_argument(
        "--port", type=_port, default=8080, help="0: any free port (default: %(default)s)"
    )
    s.add_argument(
        "--served-model-name", help='the "model" name in answers (default: --model as given)'
    )
    s.add_argument(
        "--api-key",
        default=os.environ.get("NPDISTIL_API_KEY"),
        help="require Authorization: Bearer KEY (default: $NPDISTIL_API_KEY; the probes and "
        "/metrics stay open)",
    )
    limits = s.add_argument_group("limits")
    limits.add_argument(
        "--max-concurrent-requests",
        type=positive,
        default=512,
        help="requests in flight at once; more get 429 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-batch-tokens",
        type=positive,
        default=4096,
        help="tokens per forward pass, counted without padding (default: %(default)s)",
    )
    limits.add_argument(
        "--max-batch-requests", type=positive, help="inputs per forward pass (default: no limit)"
    )
    limits.add_argument(
        "--max-client-batch-size",
        type=positive,
        default=2048,
        help="inputs in one request; more get 413 (default: %(default)s, as OpenAI)",
    )
    limits.add_argument(
        "--payload-limit",
        type=positive,
        default=2_000_000,
        help="bytes of request body; more get 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-input-tokens",
        type=positive,
        help="longest input run, special tokens included (default: the model's max_seq_length)",
    )
    limits.add_argument(
        "--auto-truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut longer inputs there (default); --no-auto-truncate refuses them (422) unless a "
        "TEI request asks truncate: true",
    )
    limits.add_argument(
        "--accept-token-ids",
        action="store_true",
        help="take token-id input on /v1/embeddings as this model's own ids (TEI's meaning); "
        "by default it is refused, since LangChain sends tiktoken ids there",
    )
    limits.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        help="on SIGTERM, seconds to finish accepted requests before stopping (default: "
        "%(default)s)",
    )


def serve(args: argparse.Namespace) -> int:
    try:
        from ..serve import Settings
        from ..serve import serve as run_server
    except ImportError as exc:
        raise UsageError(
            f"npdistil serve needs the server's packages ({exc.name} is missing): "
            'pip install "npdistil[serve]"'
        ) from None
    no_revision_for_local(args, args.model)
    model = load(args.model, revision=args.revision, local_files_only=args.offline)
    limit = model.config.max_tokens  # positions usable for tokens (514 rows: 512 in RoBERTa, MPNet)
    if args.max_input_tokens is not None and not 2 < args.max_input_tokens <= limit:
        raise UsageError(f"--max-input-tokens must be in [3, {limit}] (the model's positions)")
    longest = args.max_input_tokens or model.max_seq_length
    if longest > args.max_batch_tokens:
        raise UsageError(
            f"--max-batch-tokens {args.max_batch_tokens} is less than the longest input "
            f"({longest} tokens): raise it, or lower --max-input-tokens"
        )
    hold = os.environ.get(_HOLD_FILE_VARIABLE)
    settings = Settings(
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name or args.model,
        api_key=args.api_key or None,
        max_concurrent_requests=args.max_concurrent_requests,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_client_batch_size=args.max_client_batch_size,
        payload_limit=args.payload_limit,
        max_input_tokens=args.max_input_tokens,
        auto_truncate=args.auto_truncate,
        accept_token_ids=args.accept_token_ids,
        drain_timeout=args.drain_timeout,
        hold_file=Path(hold) if hold else None,
    )
    return int(run_server(model, settings))

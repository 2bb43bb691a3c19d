"""What a server is started with: where it listens, its limits, its key. One frozen record, made
by the command line (``npdistil serve``) or by a program that embeds the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """A server's settings; the defaults are ``npdistil serve``'s."""

    # Loopback only unless asked: a container publishes its port with --host 0.0.0.0.
    host: str = "127.0.0.1"
    port: int = 8080  # 0: the system picks a free port (the startup line names it)
    # The name answers carry in "model" and /v1/models lists (default: the --model given).
    served_model_name: str = "npdistil"
    api_key: str | None = None  # Authorization: Bearer <key> on every route but the probes
    # Requests admitted at once (being read, queued or run); one more gets 429. TEI's default.
    max_concurrent_requests: int = 512
    # A forward pass holds at most this many tokens (no padding: npdistil packs sequences).
    # Throughput stops growing near a thousand tokens on a CPU; more only costs memory.
    max_batch_tokens: int = 4096
    max_batch_requests: int | None = None  # inputs per forward pass; None: tokens decide
    max_client_batch_size: int = 2048  # inputs in one request, as OpenAI allows
    payload_limit: int = 2_000_000  # bytes of request body, as TEI
    # Longest input run, special tokens included; None: the model's max_seq_length.
    max_input_tokens: int | None = None
    # Longer inputs are cut there (sentence-transformers and TEI do); False: refused (422).
    auto_truncate: bool = True
    # Token-id input on the OpenAI route taken as this model's own ids (TEI's meaning); by
    # default it is refused, since LangChain sends tiktoken ids there.
    accept_token_ids: bool = False
    drain_timeout: float = 30.0  # seconds SIGTERM waits for accepted requests before giving up
    # Tests only: while this file exists the model worker starts no forward pass, so that a
    # test can hold requests in the queue (overload, disconnects, drain) without timing.
    hold_file: Path | None = None

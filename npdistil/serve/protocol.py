"""What clients send and what they get back: request bodies checked field by field, and the
answers in the shapes of the APIs they come from.

Field names, defaults and shapes are those of OpenAI's ``/v1/embeddings`` (openai-python's
``embeddings.create``) and of text-embeddings-inference's routes (TEI's ``/embed``,
``/embed_all``, ``/tokenize``, ``/predict``, ``/rerank``). Every error is OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the field (and index) at fault in
``param`` and in the message:

- 400: the body is not a JSON object (not UTF-8, not JSON, nested too deep), or token ids were
  sent to the OpenAI route (LangChain's tiktoken ids mean nothing to this vocabulary).
- 413: too much at once: a body over ``--payload-limit`` bytes, or more inputs than
  ``--max-client-batch-size``. The client's remedy is the same for both: send less per request.
- 422: a field whose value can't be used (wrong type, null item, empty list, lone surrogate,
  unknown choice, non-positive ``dimensions``, an input too long with truncation off).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ApiError",
    "Rules",
    "EmbedRequest",
    "TokenizeRequest",
    "PredictRequest",
    "RerankRequest",
    "parse_json",
    "parse_openai",
    "parse_embed",
    "parse_tokenize",
    "parse_predict",
    "parse_rerank",
    "dump",
    "openai_embeddings",
    "TOKEN_IDS_REFUSED",
]

TOKEN_IDS_REFUSED = (
    "{param} holds token ids, not texts. LangChain's OpenAIEmbeddings sends these by default: "
    "tiktoken ids for OpenAI's models, which mean nothing to this model's vocabulary. Send the "
    "texts themselves (OpenAIEmbeddings(..., check_embedding_ctx_length=False)), or start the "
    "server with --accept-token-ids if they are this model's own ids"
)


class ApiError(Exception):
    """A request answered with an error: its HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or _CODES.get(status, "invalid_value")
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> bytes:
        return dump(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "invalid_value",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "unavailable",
}


class Rules(NamedTuple):
    """What requests are checked against: the server's limits and the model's facts."""

    max_client_batch_size: int
    vocab_size: int
    dimensions: int  # the model's sentence embedding width: the largest ``dimensions``
    prompts: tuple[str, ...]  # the model's prompt names
    accept_token_ids: bool  # on the OpenAI route (TEI's routes always take them)


class EmbedRequest(NamedTuple):
    """An embedding request, OpenAI's or TEI's (``/embed``, ``/embed_all``)."""

    inputs: list[str | list[int]]  # texts, or token-id sequences of the model's vocabulary
    single: bool  # one input given alone (TEI still answers a list)
    dimensions: int | None = None  # keep the first k dimensions (then unit length)
    normalize: bool = True
    truncate: bool | None = None  # None: the server's --auto-truncate
    truncate_left: bool = False  # TEI's truncation_direction "left": keep the end
    prompt_name: str | None = None  # None: the model's default prompt, if it has one
    encoding_format: str = "float"  # OpenAI: "float" or "base64"


class TokenizeRequest(NamedTuple):
    inputs: list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


class PredictRequest(NamedTuple):
    """TEI's ``/predict``: texts or text pairs for the sequence classifier."""

    inputs: list[tuple[str, str | None]]
    single: bool
    truncate: bool | None = None
    truncate_left: bool = False
    raw_scores: bool = False


class RerankRequest(NamedTuple):
    query: str
    texts: list[str]
    truncate: bool | None = None
    truncate_left: bool = False
    raw_scores: bool = False
    return_text: bool = False


# ---- reading a body ---------------------------------------------------------------------------


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why it is not one."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise ApiError(400, "request body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int over 4,300 digits
        raise ApiError(400, f"request body is not valid JSON: {_short(str(exc))}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"request body must be a JSON object, got {_kind(value)}")
    return value


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _kind(value: Any) -> str:
    """How a JSON value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(text: str, param: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            422,
            f"{param} is not valid Unicode: a lone surrogate at character {exc.start}",
            param=param,
        ) from None
    return text


def _text(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        what = "is required" if value is None else f"must be a string, got {_kind(value)}"
        raise ApiError(422, f"{field} {what}", param=field)
    return _check_text(value, field)


def _bool(obj: dict[str, Any], field: str, default: bool | None) -> Any:
    value = obj.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"{field} must be true or false, got {_kind(value)}", param=field)
    return value


def _optional_str(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{field} must be a string, got {_kind(value)}", param=field)
    return value


def _truncate_left(obj: dict[str, Any]) -> bool:
    value = obj.get("truncation_direction")
    if value is None:
        return False
    if value not in ("right", "Right", "left", "Left"):
        raise ApiError(
            422,
            f'truncation_direction must be "right" or "left", got {_short(repr(value), 60)}',
            param="truncation_direction",
        )
    return str(value).lower() == "left"


def _prompt_name(obj: dict[str, Any], rules: Rules) -> str | None:
    name = _optional_str(obj, "prompt_name")
    if name is not None and name not in rules.prompts:
        have = ", ".join(repr(p) for p in rules.prompts) or "none"
        raise ApiError(
            422,
            f"prompt_name {_short(repr(name), 60)} is not one of the model's prompts ({have})",
            param="prompt_name",
        )
    return name


def _dimensions(obj: dict[str, Any], rules: Rules) -> int | None:
    value = obj.get("dimensions")
    if value is None:
        return None
    if not _is_id(value) or value < 1:
        raise ApiError(
            422,
            f"dimensions must be a positive integer, got {_short(json.dumps(value), 60)}",
            param="dimensions",
        )
    if value > rules.dimensions:
        raise ApiError(
            422,
            f"dimensions {value} is more than the model's {rules.dimensions}",
            param="dimensions",
        )
    return int(value)


def _batch_size(n: int, field: str, rules: Rules) -> None:
    if n > rules.max_client_batch_size:
        raise ApiError(
            413,
            f"{field} has {n} inputs, more than this server takes in one request "
            f"(--max-client-batch-size {rules.max_client_batch_size}): send them in parts",
            param=field,
            code="too_many_inputs",
        )


def _inputs(
    obj: dict[str, Any], field: str, rules: Rules, *, ids: bool, refuse_ids: bool = False
) -> tuple[list[str | list[int]], bool]:
    """The inputs of ``field``, and whether one was given alone: a string, a list of strings,
    or, where ``ids`` are taken, a token-id sequence or a list of them (TEI's ``Input``)."""
    value = obj.get(field)
    if value is None:
        raise ApiError(422, f"{field} is required: a string or a list of strings", param=field)
    if isinstance(value, str):
        return [_check_text(value, field)], True
    if not isinstance(value, list):
        raise ApiError(
            422, f"{field} must be a string or a list of strings, got {_kind(value)}", param=field
        )
    if not value:
        raise ApiError(422, f"{field} is an empty list: give at least one input", param=field)
    single = ids and all(_is_id(v) for v in value)  # [101, 2023, ...]: one id sequence
    items: list[Any] = [value] if single else value
    _batch_size(len(items), field, rules)
    out: list[str | list[int]] = []
    for i, item in enumerate(items):
        param = field if single else f"{field}[{i}]"
        if isinstance(item, str):
            out.append(_check_text(item, param))
        elif ids and isinstance(item, list) and all(_is_id(v) for v in item):
            if refuse_ids:
                raise ApiError(
                    400,
                    TOKEN_IDS_REFUSED.format(param=param),
                    param=param,
                    code="token_ids_refused",
                )
            out.append(_check_ids(item, param, rules.vocab_size))
        else:
            what = "a string or a list of token ids" if ids else "a string"
            raise ApiError(422, f"{param} is {_kind(item)}; each input must be {what}", param=param)
    return out, single


def _check_ids(ids: list[int], param: str, vocab_size: int) -> list[int]:
    for j, v in enumerate(ids):
        if not 0 <= v < vocab_size:
            raise ApiError(
                422,
                f"{param}[{j}] = {_short(str(v), 40)} is outside the vocabulary [0, {vocab_size})",
                param=f"{param}[{j}]",
            )
    return ids


# ---- the routes' requests ---------------------------------------------------------------------


def parse_openai(obj: dict[str, Any], rules: Rules) -> EmbedRequest:
    """OpenAI's ``POST /v1/embeddings``: ``input``, ``model`` (any name: one model is served),
    ``encoding_format``, ``dimensions``; ``user`` and unknown fields are ignored."""
    _optional_str(obj, "model")
    fmt = obj.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise ApiError(
            422,
            f'encoding_format must be "float" or "base64", got {_short(json.dumps(fmt), 60)}',
            param="encoding_format",
        )
    # Token ids are refused before anything else is said about them (the 400 names the fix).
    inputs, single = _inputs(obj, "input", rules, ids=True, refuse_ids=not rules.accept_token_ids)
    return EmbedRequest(
        inputs, single, dimensions=_dimensions(obj, rules), normalize=True, encoding_format=fmt
    )


def parse_embed(obj: dict[str, Any], rules: Rules, *, pooled: bool = True) -> EmbedRequest:
    """TEI's ``POST /embed`` (``pooled``) and ``POST /embed_all``: ``inputs`` (texts or token
    ids), ``truncate``, ``truncation_direction``, ``prompt_name``; for ``/embed`` also
    ``normalize`` (default true) and ``dimensions``."""
    inputs, single = _inputs(obj, "inputs", rules, ids=True)
    return EmbedRequest(
        inputs,
        single,
        dimensions=_dimensions(obj, rules) if pooled else None,
        normalize=_bool(obj, "normalize", True) if pooled else False,
        truncate=_bool(obj, "truncate", None),
        truncate_left=_truncate_left(obj),
        prompt_name=_prompt_name(obj, rules),
    )


def parse_tokenize(obj: dict[str, Any], rules: Rules) -> TokenizeRequest:
    """TEI's ``POST /tokenize``: ``inputs`` (texts), ``add_special_tokens``, ``prompt_name``."""
    inputs, _ = _inputs(obj, "inputs", rules, ids=False)
    return TokenizeRequest(
        [str(t) for t in inputs],
        add_special_tokens=_bool(obj, "add_special_tokens", True),
        prompt_name=_prompt_name(obj, rules),
    )


def parse_predict(obj: dict[str, Any], rules: Rules) -> PredictRequest:
    """TEI's ``POST /predict``: ``inputs`` is a text, a pair ``[text, text]``, or a batch of
    both ``[[text], [text, text], ...]``; ``truncate``, ``truncation_direction``,
    ``raw_scores``."""
    value = obj.get("inputs")
    pairs: list[tuple[str, str | None]]
    if isinstance(value, str):
        pairs, single = [(_check_text(value, "inputs"), None)], True
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > 2:
            raise ApiError(
                422,
                f"inputs is a list of {len(value)} strings: give a text, a pair [text, text], "
                "or a batch [[text], [text, text], ...]",
                param="inputs",
            )
        pairs, single = [_pair(value, "inputs")], True
    elif isinstance(value, list) and value:
        _batch_size(len(value), "inputs", rules)
        pairs, single = [_pair(v, f"inputs[{i}]") for i, v in enumerate(value)], False
    elif isinstance(value, list):
        raise ApiError(422, "inputs is an empty list: give at least one input", param="inputs")
    else:
        what = "is required" if value is None else f"must be a string or a list, got {_kind(value)}"
        raise ApiError(422, f"inputs {what}", param="inputs")
    return PredictRequest(
        pairs,
        single,
        truncate=_bool(obj, "truncate", None),
        truncate_left=_truncate_left(obj),
        raw_scores=_bool(obj, "raw_scores", False),
    )


def _pair(value: Any, param: str) -> tuple[str, str | None]:
    if not isinstance(value, list) or not 1 <= len(value) <= 2:
        got = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
        raise ApiError(
            422, f"{param} must be [text] or a pair [text, text], got {got}", param=param
        )
    for j, text in enumerate(value):
        if not isinstance(text, str):
            raise ApiError(
                422, f"{param}[{j}] is {_kind(text)}, not a string", param=f"{param}[{j}]"
            )
        _check_text(text, f"{param}[{j}]")
    return value[0], (value[1] if len(value) == 2 else None)


def parse_rerank(obj: dict[str, Any], rules: Rules) -> RerankRequest:
    """TEI's ``POST /rerank``: ``query``, ``texts``, ``truncate``, ``truncation_direction``,
    ``raw_scores``, ``return_text``."""
    query = _text(obj, "query")
    texts, single = _inputs(obj, "texts", rules, ids=False)
    if single:
        raise ApiError(422, "texts must be a list of strings, got a string", param="texts")
    return RerankRequest(
        query,
        [str(t) for t in texts],
        truncate=_bool(obj, "truncate", None),
        truncate_left=_truncate_left(obj),
        raw_scores=_bool(obj, "raw_scores", False),
        return_text=_bool(obj, "return_text", False),
    )


# ---- answers ----------------------------------------------------------------------------------


def dump(value: Any) -> bytes:
    """Compact JSON. Vectors come as lists of float32 values widened to float64, which print
    exactly (a client parsing them gets the float32 values back)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _vector(v: np.ndarray, fmt: str) -> Any:
    if fmt == "base64":  # OpenAI's: the little-endian float32 bytes
        return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
    return v.tolist()


def openai_embeddings(
    vectors: Sequence[np.ndarray], fmt: str, model: str, tokens: int
) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse``: ``data`` in input order."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(v, fmt)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

"""``GET /openapi.json``: the routes, their request bodies and answers, as an OpenAPI 3.1
document written out by hand (the server has no schema library; tests check that every route
the app serves is described here)."""

from __future__ import annotations

from typing import Any

__all__ = ["document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_INPUT = {
    "description": "A text, a list of texts, or token ids of the served model's vocabulary "
    "(one list, or a list of them)",
    "oneOf": [
        {"type": "string"},
        _STRINGS,
        _IDS,
        {"type": "array", "items": {"oneOf": [{"type": "string"}, _IDS]}, "minItems": 1},
    ],
}
_VECTORS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_TRUNCATE = {
    "truncate": {
        "type": ["boolean", "null"],
        "default": None,
        "description": "cut inputs longer than the server's max_input_length (null: the "
        "server's --auto-truncate); false: such an input is a 422",
    },
    "truncation_direction": {"enum": ["right", "left", "Right", "Left"], "default": "right"},
}
_PROMPT = {"prompt_name": {"type": ["string", "null"], "default": None}}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
                "required": ["message", "type", "param", "code"],
            }
        },
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {
                **_INPUT,
                "description": "a text or a list of texts; token ids only with "
                "--accept-token-ids (then as the served model's own ids)",
            },
            "model": {"type": "string", "description": "accepted; one model is served"},
            "encoding_format": {"enum": ["float", "base64"], "default": "float"},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string", "description": "ignored"},
        },
    },
    "EmbeddingsResponse": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string", "description": "base64 float32 LE"},
                            ]
                        },
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
            },
        },
    },
    "EmbedRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _INPUT,
            "normalize": {"type": "boolean", "default": True},
            "dimensions": {"type": ["integer", "null"], "minimum": 1, "default": None},
            **_TRUNCATE,
            **_PROMPT,
        },
    },
    "EmbedAllRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": _INPUT, **_TRUNCATE, **_PROMPT},
    },
    "TokenizeRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {"oneOf": [{"type": "string"}, _STRINGS]},
            "add_special_tokens": {"type": "boolean", "default": True},
            **_PROMPT,
        },
    },
    "Token": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "text": {"type": "string"},
            "special": {"type": "boolean"},
            "start": {"type": ["integer", "null"], "description": "UTF-8 byte offset"},
            "stop": {"type": ["integer", "null"], "description": "UTF-8 byte offset"},
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": {
                "description": "a text, a pair [text, text], or a batch [[text], [text, text]]",
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
                    {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 1,
                            "maxItems": 2,
                        },
                        "minItems": 1,
                    },
                ],
            },
            "raw_scores": {"type": "boolean", "default": False},
            **_TRUNCATE,
        },
    },
    "Prediction": {
        "type": "object",
        "properties": {"score": {"type": "number"}, "label": {"type": "string"}},
    },
    "RerankRequest": {
        "type": "object",
        "required": ["query", "texts"],
        "properties": {
            "query": {"type": "string"},
            "texts": _STRINGS,
            "raw_scores": {"type": "boolean", "default": False},
            "return_text": {"type": "boolean", "default": False},
            **_TRUNCATE,
        },
    },
    "Rank": {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "score": {"type": "number"},
            "text": {"type": "string"},
        },
    },
}

_ERRORS = {
    "400": "body not JSON, or token ids on the OpenAI route",
    "401": "missing or wrong API key",
    "413": "body over --payload-limit, or more inputs than --max-client-batch-size",
    "422": "a field's value can't be used (the message and param name it)",
    "429": "more than --max-concurrent-requests in flight (Retry-After)",
    "503": "draining (Retry-After)",
}


def _post(summary: str, request: str, answer: dict[str, Any], *, needs_head: bool = False) -> Any:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": answer}}}
    }
    errors = dict(_ERRORS)
    if needs_head:
        errors["404"] = "the served model has no suitable classification head"
    for status, text in errors.items():
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": responses,
        }
    }


def _get(summary: str, answer: dict[str, Any], *, public: bool = False, text: bool = False) -> Any:
    media = "text/plain" if text else "application/json"
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {media: {"schema": answer}}}},
    }
    if public:
        op["security"] = []  # the probes and metrics need no key
    return {"get": op}


def document(model: str, version: str, secured: bool) -> dict[str, Any]:
    """The OpenAPI document of a server serving ``model``."""
    embeddings = _post(
        "OpenAI embeddings: unit-length vectors", "EmbeddingsRequest", _ref("EmbeddingsResponse")
    )
    paths = {
        "/v1/embeddings": embeddings,
        "/embeddings": embeddings,
        "/embed": _post("TEI: sentence embeddings", "EmbedRequest", _VECTORS),
        "/embed_all": _post(
            "TEI: every token's vector",
            "EmbedAllRequest",
            {"type": "array", "items": _VECTORS},
        ),
        "/tokenize": _post(
            "TEI: tokens with their ids and offsets",
            "TokenizeRequest",
            {"type": "array", "items": {"type": "array", "items": _ref("Token")}},
        ),
        "/predict": _post(
            "TEI: sequence classification of texts or pairs",
            "PredictRequest",
            {"type": "array"},
            needs_head=True,
        ),
        "/rerank": _post(
            "TEI: texts ranked against a query by a cross-encoder",
            "RerankRequest",
            {"type": "array", "items": _ref("Rank")},
            needs_head=True,
        ),
        "/v1/models": _get("OpenAI: the served model", {"type": "object"}),
        "/info": _get("TEI: the model and the server's limits", {"type": "object"}),
        "/openapi.json": _get("This document", {"type": "object"}),
        "/health": _get("Liveness: 200 once the model is loaded and ran", {}, public=True),
        "/ready": _get("Readiness: 503 while draining", {}, public=True),
        "/metrics": _get("Prometheus text format", {"type": "string"}, public=True, text=True),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "npdistil serve",
            "version": version,
            "description": f"Embeddings from {model}: OpenAI's and text-embeddings-inference's "
            "routes, computed by npdistil in NumPy.",
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc

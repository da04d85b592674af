"""Request bodies read and parsed defensively: size enforced while reading, JSON depth and number
size bounded, every failure a GatewayError (400/413), never an exception the server turns into a
500. Parsed here rather than by FastAPI so that malformed JSON is answered in OpenAI's error
format and still leaves an audit record.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from config.gateway import Limits
from gateway.protocol import GatewayError

M = TypeVar("M", bound=BaseModel)


def invalid_json(message: str) -> GatewayError:
    return GatewayError(400, f"Request body is not valid JSON: {message}",
                        "invalid_request_error", "invalid_json")


def too_large(limit: int, size: str) -> GatewayError:
    return GatewayError(413, f"Request body is {size} bytes; the limit is {limit}.",
                        "invalid_request_error", "request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (a declared Content-Length first), so a
    huge or endless chunked upload is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise GatewayError(400, "Content-Length must be a number of bytes.",
                               "invalid_request_error", "invalid_request")
        if int(declared) > limit:
            raise too_large(limit, declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, f"more than {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def loads(raw: bytes, limits: Limits) -> Any:
    """json.loads with numbers of at most `max_number_digits` digits, finite floats only (no
    NaN/Infinity), and nesting of at most `max_json_depth`."""
    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > limits.max_number_digits:
            raise ValueError(f"a number has more than {limits.max_number_digits} digits")
        return int(text)

    def parse_float(text: str) -> float:
        if len(text) > limits.max_number_digits + 8:
            raise ValueError(f"a number has more than {limits.max_number_digits} digits")
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text} is out of range")
        return value

    def parse_constant(text: str) -> float:
        raise ValueError(f"{text} is not JSON")

    try:
        data = json.loads(raw, parse_int=parse_int, parse_float=parse_float,
                          parse_constant=parse_constant)
    except RecursionError as exc:
        raise invalid_json(f"nested more than {limits.max_json_depth} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise invalid_json(str(exc)[:200]) from exc
    if depth(data) > limits.max_json_depth:
        raise invalid_json(f"nested more than {limits.max_json_depth} levels")
    return data


def depth(data: Any) -> int:
    """Nesting depth without recursion (a deep body must not exhaust the stack here either)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in node)
    return deepest


def validate(data: Any, model: type[M]) -> M:
    if not isinstance(data, dict):
        raise GatewayError(400, "Request body must be a JSON object.",
                           "invalid_request_error", "invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        raise GatewayError(400, f"Invalid request: {param}: {first['msg']}",
                           "invalid_request_error", "invalid_request", param) from exc


async def parse(request: Request, model: type[M], limits: Limits,
                max_bytes: int | None = None) -> M:
    """Size, JSON, schema: in this order, each refusal a 4xx."""
    raw = await read_body(request, max_bytes or limits.max_body_bytes)
    return validate(loads(raw, limits), model)

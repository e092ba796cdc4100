"""The forecaster's HTTP edge, one ASGI middleware: bearer auth, JSON-only request bodies, the
latency histogram, the real OpenAPI spec at /docs.json, and one shape for error bodies.

Why rewrite error bodies: BentoML 1.4 answers every request body that fails validation with 400
(malformed JSON and schema violations alike) and wraps a raised exception's message in a list.
The contract is 400 for malformed JSON only, 422 naming the field path for schema violations, and
`{"error": message, "detail": [{field, message, type}]}` bodies, whatever the status. Only error
responses of the API routes are buffered and rewritten; successful ones stream through untouched.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

TOKEN_ENV = "RETAIL_ML_API_TOKEN"
AUTH_ENV = "RETAIL_ML_API_AUTH"  # "off": a prod server without a token, on purpose
OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})  # probes, scrapes
UNAUTHORIZED = "missing or invalid bearer token: send 'Authorization: Bearer <token>'"
UNSUPPORTED = "unsupported Content-Type: send the body as JSON, Content-Type: application/json"
# The `type` of an error's detail entry when the service raised a message, by status. A 422 the
# service raises is a valid request it cannot serve (a date outside the horizon, an override
# without online state, an undeclared covariate); pydantic's own types mark invalid ones.
UNSERVABLE = "unservable"
KINDS = {400: "json_invalid", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
         413: "too_many_requests", 415: "unsupported_media_type", 422: UNSERVABLE}
FIELD_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)*")  # "requests.3.date" in "requests.3.date: ..."
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Callable[[], Awaitable[Message]], Send], Awaitable[None]]


class OpenInProd(BentoMLException):
    """Serving in prod without a token and without saying so. A BentoMLException, so that
    `bentoml serve` prints its message on one line instead of a traceback."""


def api_token(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The bearer token requests must carry; None: the API is open. Outside prod it is open
    unless a token is set; prod is never open by accident (RETAIL_ML_ENV as the settings read
    it): it needs a token, or RETAIL_ML_API_AUTH=off. A token set always counts."""
    env = os.environ if environ is None else environ
    if token := env.get(TOKEN_ENV, ""):
        return token.encode()
    if env.get("RETAIL_ML_ENV") == "prod" and env.get(AUTH_ENV, "").strip().lower() != "off":
        raise OpenInProd(
            f"RETAIL_ML_ENV=prod and {TOKEN_ENV} is not set: the forecast service would answer "
            f"anyone. Set {TOKEN_ENV} to the bearer token clients must send, or {AUTH_ENV}=off "
            "to serve without auth on purpose")
    return None


@functools.cache
def latency_histogram() -> Any:
    # Imported on first use, not with this module: prometheus_client picks its storage when
    # imported, and it must see the multiprocess directory BentoML gives its workers.
    import prometheus_client

    return prometheus_client.Histogram(
        "demand_forecaster_request_duration_seconds",
        "API request latency, first byte in to last byte out, by endpoint and model version",
        ["endpoint", "model_version"], buckets=LATENCY_BUCKETS)


class ApiEdge:
    """`endpoints`: the API paths to time and whose errors to reshape; `model_version`: the
    version answering now, read per request; `openapi`: the spec /docs.json serves (called per
    request: its example follows the served snapshot)."""

    def __init__(self, app: App, endpoints: tuple[str, ...], model_version: Callable[[], str],
                 openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.endpoints = frozenset(endpoints)
        self.model_version = model_version
        self.openapi = openapi
        # read when the server starts, not at import; in prod, no open API by accident
        self.token = api_token()
        self.histogram = latency_histogram()

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.token is not None and not self._authorized(scope):
            return await _send_json(send, 401, error_body(401, UNAUTHORIZED),
                                    [(b"www-authenticate", b"Bearer")])
        if path == "/docs.json" and scope["method"] == "GET":
            return await _send_json(send, 200, self.openapi(), [])
        if path in ("/docs", "/docs/") and scope["method"] == "GET":
            # where FastAPI users look for Swagger; BentoML serves it at / (on /docs.json)
            return await _send_json(send, 307, {"location": "/"}, [(b"location", b"/")])
        if path not in self.endpoints:  # UI, /schema.json: BentoML's own answers
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and not _is_json(scope):
            # BentoML would parse forms (and fail on a malformed one with a 500): JSON only
            return await _send_json(send, 415, error_body(415, UNSUPPORTED), [])
        start = time.perf_counter()
        try:
            await self.app(scope, receive, _ErrorReshaper(send))
        finally:
            self.histogram.labels(path, self.model_version()).observe(time.perf_counter() - start)

    def _authorized(self, scope: Message) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credentials = given.partition(b" ")
        # constant time, so response timing does not reveal how much of a guess was right
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials, self.token)


class _ErrorReshaper:
    """A `send` that holds back a response of status >= 400 until its body is complete, then
    sends the reshaped one."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        status, body = reshape(self.start["status"], b"".join(self.chunks))
        await _send_json(self.send, status, body, [
            (k, v) for k, v in self.start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")])


def quiet_client_errors(record: logging.LogRecord) -> bool:
    """A filter for BentoML's request error log, which records every failed request as an
    ERROR with a traceback: a client's mistake becomes one short INFO line (without the
    request's values); server faults keep their traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    status = getattr(exc, "error_code", None)
    if isinstance(exc, ValidationError):
        first = exc.errors(include_input=False)[0]
        where = ".".join(map(str, first["loc"])) or "body"
        detail = f"{exc.error_count()} validation error(s), first {where}: {first['msg']}"
    elif status is not None and status < 500:
        detail = f"{type(exc).__name__} {int(status)}: {exc}"
    else:
        return True
    # BentoML says "Exception on /forecast [POST]": for a client's mistake, it is not one
    said = record.getMessage().replace("Exception on", "Client error on", 1)
    record.msg, record.args = f"{said}: {detail}", None
    record.exc_info, record.exc_text = None, None
    record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def _is_json(scope: Message) -> bool:
    given = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
    media = given.split(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The contract's error body for a message: `detail` names the field when the message starts
    with its path ("requests.3.date: ..."), else the body as a whole."""
    head, sep, rest = message.partition(": ")
    field = head if sep and FIELD_PATH.fullmatch(head) else "body"
    return {"error": message, "detail": [{
        "field": field, "message": rest if field != "body" else message,
        "type": KINDS.get(status, "server_error" if status >= 500 else "error")}]}


def reshape(status: int, raw: bytes) -> tuple[int, dict[str, Any]]:
    """An error response's status and body in the contract's form."""
    try:
        data = json.loads(raw)
    except ValueError:  # plain text, such as Starlette's "Method Not Allowed"
        return status, error_body(status, raw.decode("utf-8", "replace"))
    if isinstance(data, list) and len(data) == 1:  # BentoML's wrapping of an exception message
        data = data[0]
    if not isinstance(data, dict):
        return status, error_body(status, str(data))
    detail = data.get("detail")
    if status == 400 and isinstance(detail, list):  # pydantic's errors for the request body
        if any(e.get("type") == "json_invalid" for e in detail):
            return 400, error_body(400, f"malformed JSON body: {detail[0].get('msg', '')}")
        errors = [{"field": ".".join(map(str, e.get("loc", ()))) or "body",
                   "message": e.get("msg", ""), "type": e.get("type", "")} for e in detail]
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return 422, {"error": f"invalid request: {shown}{more}", "detail": errors}
    if "error" not in data and isinstance(detail, str):  # FastAPI's form, from GET /model
        return status, error_body(status, detail)
    if isinstance(data.get("error"), str) and not isinstance(detail, list):
        return status, error_body(status, data["error"])
    return status, data


async def _send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        *headers, (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})

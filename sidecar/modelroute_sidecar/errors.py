"""OpenAI-style errors: the exception to raise, its body, and the translation of anything else.

Clients of the sidecar are OpenAI SDKs: they read `{"error": {"message", "type", "code", "param"}}` and
the HTTP status. Every response, error or not, carries the request id (`x-request-id`, taken from the
client or generated); on the data port the API views add the decision headers too, so a failed request
is as explainable as a served one. The admin port and the workers' control sockets (the same HTTP
server, `server.py`) answer with the same bodies.

Every data-port error also tells the SDK whether to retry (`x-should-retry`, which the official SDKs
obey before their own status rules). A 5xx comes after the router's own attempts (retries, fallbacks,
failover, within the policy's retry budget and deadline) or from a refusal a retry would meet again
(nothing compliant or healthy, an internal error): `false`, so two SDK retries do not turn the router's
three attempts into nine. The answers given before anything was attempted, and meant to be retried, say
`true`: no config loaded yet, the worker's connection cap, and the 429s, whose `retry-after` the SDK
waits for (the router itself never waits). Other 4xx carry no advice: the SDKs do not retry them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Mapping

from .server import HttpResponse

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    415: "invalid_request_error",
    431: "invalid_request_error",
    422: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """A failure with an HTTP status and an OpenAI-style body; raise it anywhere below a view."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        """OpenAI's error type for the status (`server_error` for 5xx)."""
        return _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")


def error_body(error: ApiError, request_id: str) -> bytes:
    """Serialize an error the way OpenAI does, plus the request id for support."""
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "code": error.code,
            "param": error.param,
            "request_id": request_id,
        }
    }
    return json.dumps(body).encode()


RETRY_ADVICE = {
    "not_ready": True,
    "too_many_connections": True,
    "rate_limit_exceeded": True,
    "upstream_rate_limited": True,
}
"""Error codes whose `x-should-retry` is not the status's rule (see the module's docstring)."""

SHOULD_RETRY_HEADER = "x-should-retry"


def should_retry(error: ApiError) -> bool | None:
    """Whether an SDK should retry after `error` (None: no advice, its own rule applies)."""
    advice = RETRY_ADVICE.get(error.code)
    if advice is not None:
        return advice
    return False if error.status >= 500 else None


def error_response(error: ApiError, request_id: str) -> HttpResponse:
    """A JSON response for `error`, with its extra headers (e.g. retry-after), the request id and the
    retry advice."""
    headers = {**error.headers, "x-request-id": request_id}
    advice = should_retry(error)
    if advice is not None:
        headers[SHOULD_RETRY_HEADER] = "true" if advice else "false"
    return HttpResponse(error.status, error_body(error, request_id), headers)


def request_id_of(headers: Mapping[str, str]) -> str:
    """The client's `x-request-id` when it sent a sane one, else a new one."""
    given = headers.get("x-request-id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable():  # it is echoed as a header
        return given
    return new_request_id()


class _RequestIds:
    """Request ids as 32 hex digits: 64 random bits per process, then a counter.

    As unique as uuid4 in practice (a process's prefix is drawn once, from os.urandom) at a fraction
    of its cost, which matters because every request without an `x-request-id` needs one.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked worker must not repeat its parent's

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(1)


_REQUEST_IDS = _RequestIds()


def new_request_id() -> str:
    """A fresh request id (32 hex digits, unique across processes)."""
    return f"{_REQUEST_IDS.prefix}{next(_REQUEST_IDS.counter):016x}"


REFUSAL_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "request_too_large",
    414: "request_line_too_long",
    415: "unsupported_content_encoding",
    431: "request_header_fields_too_large",
    503: "too_many_connections",
}
"""Error codes of the requests the HTTP server refuses before any view (`server.RefusalHandler`)."""


def refusal_error(status: int, reason: str) -> ApiError:
    """The error for a request the server refused (too large, malformed, too slow, ...)."""
    param = "Content-Encoding" if status == 415 else None
    return ApiError(status, REFUSAL_CODES.get(status, "bad_request"), reason, param=param)


def translate(exc: BaseException) -> ApiError:
    """Map any exception escaping a handler to the ApiError a client should see."""
    if isinstance(exc, ApiError):
        return exc
    return ApiError(500, "internal_error", "internal error in the router sidecar")


def unexpected(exc: Exception, what: str, request_id: str) -> ApiError:
    """`translate`, logging the failures that are bugs (anything not an ApiError that maps to 5xx)."""
    error = translate(exc)
    if error.status >= 500 and not isinstance(exc, ApiError):
        log.error("unhandled error serving %s (request %s)", what, request_id, exc_info=exc)
    return error

"""HTTP views of the Anthropic Messages API: `POST /v1/messages` (streamed or not) and
`POST /v1/messages/count_tokens`, so that clients of the Anthropic SDK route through the same policies.

A request is translated to the OpenAI chat form (`providers.anthropic.messages_to_chat`; what that form
cannot carry is refused with Anthropic's 400, never dropped) and served by the chat path of `views`:
the same authentication (the SDK's `x-api-key` is taken as the client key), decision, residency,
limits, retries and failover, to whatever provider the chosen endpoint speaks. The answer, its errors
and its stream (through `MessagesStream`) are translated back into the Messages API's shapes. Metrics
and the audit log name the route `messages`.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from .engine import extract_features
from .errors import ApiError
from .providers.common import UnsupportedError, loads_object

# The translation (`providers.anthropic`) is imported by the views on first use: a sidecar whose clients
# never call /v1/messages does not load it.
from .proxy import Exchange, decision_headers
from .server import HttpRequest, HttpResponse, ResponseStream
from .state import Sidecar
from .views import View, authenticate, serve_api, unknown_model_message


class MessagesStream(ResponseStream):
    """The client's stream, written in Messages API events: what the relay writes as OpenAI chunks is
    translated on the way (whole events in, whole events out)."""

    __slots__ = ("_encoder", "_inner")

    def __init__(self, inner: ResponseStream, model: str) -> None:  # the inner stream owns the connection
        from .providers.anthropic import ChatToMessagesStream

        self._inner = inner
        self._encoder = ChatToMessagesStream(model)
        self.started = False
        self.finished = False

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        await self._inner.start(status, headers)

    async def write(self, data: bytes) -> None:
        await self._inner.write(self._encoder.feed(data))

    def send(self, data: bytes) -> bool:  # the relay's sink, called once per relayed piece
        return self._inner.send(self._encoder.feed(data))

    def sink(self, scan: Callable[[bytes], bytes]) -> Callable[[bytes], bool]:  # the relay's
        encode = self._encoder.feed

        def translated(piece: bytes) -> bytes:
            events = scan(piece)
            return encode(events) if events else b""

        return self._inner.sink(translated)

    async def drain(self) -> None:
        await self._inner.drain()

    async def end(self) -> None:
        self.finished = True
        await self._inner.end()


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    """An error in the Messages API's shape."""
    from .providers.anthropic import error_to_anthropic

    body = error_to_anthropic(status, orjson.dumps({"error": {"message": message}}))
    return HttpResponse(status, orjson.dumps(body), dict(headers or {}))


def _client_request(request: HttpRequest, body: bytes) -> HttpRequest:
    """The request as the chat path reads it: the SDK's `x-api-key` as the bearer client key."""
    headers = dict(request.headers)
    key = headers.pop("x-api-key", None)
    if key and "authorization" not in headers:
        headers["authorization"] = "Bearer " + key
    return HttpRequest(request.method, "/v1/chat/completions", headers, body, request.query)


def _parse(raw: bytes) -> dict[str, object]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UnsupportedError("body", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise UnsupportedError("body", "must be a JSON object")
    return body


async def create_message(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse | None:
    """POST /v1/messages."""
    from .providers.anthropic import chat_to_message, error_to_anthropic, messages_to_chat

    try:
        body = _parse(request.body)
        chat = messages_to_chat(body)
    except UnsupportedError as exc:
        return anthropic_error(400, str(exc), {"x-request-id": request_id})
    model = str(body["model"])
    streamed = chat.get("stream") is True
    relay: ResponseStream = MessagesStream(stream, model) if streamed else stream
    exchange = Exchange(request_id, "messages")
    response = await serve_api(sidecar, _client_request(request, orjson.dumps(chat)), relay, exchange, "chat")
    if response is None:
        return None
    if response.status >= 400:
        translated = error_to_anthropic(response.status, response.body)
    else:
        translated = chat_to_message(loads_object(response.body), model)
    return HttpResponse(response.status, orjson.dumps(translated), response.headers)


async def count_tokens(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """POST /v1/messages/count_tokens: the router's own estimate of the prompt's tokens (the one its
    budgets and limits use; no upstream tokenizer is called)."""
    from .providers.anthropic import messages_to_chat

    headers = {"x-request-id": request_id}
    try:
        body = _parse(request.body)
        chat = messages_to_chat({"max_tokens": 1, **body})
        authenticate(sidecar, _client_request(request, b""))
    except UnsupportedError as exc:
        return anthropic_error(400, str(exc), headers)
    except ApiError as exc:
        return anthropic_error(exc.status, exc.message, headers)
    snapshot = sidecar.config.current
    if snapshot is None:
        return anthropic_error(503, "the router has no configuration loaded yet", headers)
    if chat["model"] not in snapshot.policies:
        return anthropic_error(404, unknown_model_message(chat["model"], snapshot), headers)
    features = extract_features(chat, request.headers, request_id, "chat", scan=False)
    exchange = Exchange(request_id, "messages")
    exchange.config_version = snapshot.version
    return HttpResponse(
        200, orjson.dumps({"input_tokens": features.prompt_tokens}), decision_headers(exchange)
    )


ROUTES: dict[str, dict[str, View]] = {
    "/v1/messages": {"POST": create_message},
    "/v1/messages/count_tokens": {"POST": count_tokens},
}
"""The Messages API's paths, served beside `views.ROUTES`."""

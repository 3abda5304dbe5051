"""Native providers: the request, answer, error and stream of an OpenAI API call, as an `azure-openai`,
`anthropic`, `bedrock` or `gemini` upstream speaks them (one module per provider, pure, tested with
recorded native payloads), and the Anthropic Messages API inbound (`anthropic`).

The proxy asks `Natives` only when an endpoint's provider is not `openai`: the OpenAI-to-OpenAI path
never comes here. A request a provider cannot carry raises `UnsupportedError` before any call. Answers,
errors and streams come back as the OpenAI API's, so everything downstream (usage counting, escalation
checks, the stream scanner, `/v1/messages`) reads one form.

Secrets arrive as text read by `credentials.UpstreamCredentials` (re-read on rotation); `aws` signs and
`google` mints tokens with the providers' own libraries, imported on first use only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from modelroute_contract import PROVIDER_APIS, EndpointConfig

from ..sse import StreamScanner
from .common import MalformedAnswerError, Outbound, UnsupportedError, loads_object

__all__ = ["Natives", "Outbound", "UnsupportedError"]

AZURE_PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
NATIVE_CONTENT_TYPE = "text/event-stream"


TRANSLATION_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)
"""What translating an upstream's JSON of unexpected shape raises (a string where an object belongs, an
index that is no number): the answer is malformed, whichever field it was."""


def _malformed(what: str, exc: Exception) -> MalformedAnswerError:
    # the exception's class only: its message may quote the upstream's bytes
    return MalformedAnswerError(f"{what} is malformed ({exc.__class__.__name__})")


class Natives:
    """Translation to and from the native providers, with the state signing needs (Vertex tokens)."""

    def __init__(self) -> None:
        self._vertex: Any = None

    def request(
        self,
        endpoint: EndpointConfig,
        api: str,
        body: Mapping[str, Any],
        upstream_model: str,
        region: str,
        url: str,
        secret: str,
        openai_payload: Callable[[], bytes],
    ) -> Outbound:
        """The upstream request of an OpenAI API call (`body` parsed, `openai_payload` the body as the
        OpenAI API would get it) to a replica of `endpoint`; raises UnsupportedError."""
        provider = endpoint.provider
        if api not in PROVIDER_APIS[provider]:
            raise UnsupportedError("model", f"routes to provider {provider}, which has no {api} API")
        settings = endpoint.provider_settings
        auth = settings.auth if settings is not None else ""
        stream = body.get("stream") is True
        if provider == "azure-openai":
            version = settings.api_version if settings is not None else ""
            headers = {"content-type": "application/json"}
            if auth == "entra-token":
                headers["authorization"] = "Bearer " + secret
            else:
                headers["api-key"] = secret
            path = f"/openai/deployments/{upstream_model}/{AZURE_PATHS[api]}?api-version={version}"
            return Outbound(path, openai_payload(), headers)
        # the translations are imported on first use: a sidecar of openai endpoints never loads them
        if provider == "anthropic":
            from . import anthropic

            version = settings.api_version if settings is not None else ""
            limit = endpoint.capabilities.max_output_tokens
            return anthropic.outbound(body, upstream_model, limit, stream, secret, version)
        if provider == "gemini":
            from . import gemini

            if auth == "service-account":
                project = settings.project if settings is not None else ""
                headers = {"authorization": "Bearer " + self._vertex_token(secret)}
                return gemini.outbound(body, upstream_model, stream, headers, project, region)
            return gemini.outbound(body, upstream_model, stream, {"x-goog-api-key": secret})
        if provider == "bedrock":
            from . import aws, bedrock

            payload = bedrock.request_body(body)
            path = bedrock.path(upstream_model, stream)
            headers = {"content-type": "application/json", "accept": "application/json"}
            signed = aws.sign(aws.parse_keys(secret), region, url.rstrip("/") + path, payload, headers)
            return Outbound(path, payload, signed)
        raise UnsupportedError("model", f"routes to provider {provider}, which this sidecar does not speak")

    def _vertex_token(self, key_text: str) -> str:
        if self._vertex is None:
            from .google import VertexTokens

            self._vertex = VertexTokens()
        return str(self._vertex.token(key_text))

    def answer(
        self, provider: str, status: int, body: bytes, headers: Mapping[str, str], model: str
    ) -> bytes:
        """A whole native answer (or error) as the OpenAI API's JSON; `MalformedAnswerError` (a failed
        attempt) when the answer has fields of the wrong type."""
        if provider == "azure-openai":
            return body
        try:
            return self._answer(provider, status, body, headers, model)
        except TRANSLATION_ERRORS as exc:
            raise _malformed(f"the {provider} answer", exc) from None

    def _answer(
        self, provider: str, status: int, body: bytes, headers: Mapping[str, str], model: str
    ) -> bytes:
        from . import anthropic, bedrock, gemini

        if status >= 400:
            if provider == "anthropic":
                error = anthropic.error_to_openai(status, body)
            elif provider == "gemini":
                error = gemini.error_to_openai(status, body)
            else:
                error = bedrock.error_to_openai(status, body, headers.get("x-amzn-errortype", ""))
            return orjson.dumps(error)
        parsed = loads_object(body)
        if provider == "anthropic":
            return orjson.dumps(anthropic.message_to_chat(parsed, model))
        if provider == "gemini":
            return orjson.dumps(gemini.gemini_to_chat(parsed, model))
        return orjson.dumps(bedrock.converse_to_chat(parsed, model))

    def scanner(
        self, provider: str, model: str, body: Mapping[str, Any], plain: StreamScanner
    ) -> StreamScanner:
        """The scanner of a native stream: `plain` for Azure (its stream is OpenAI's), else one that
        translates each piece into OpenAI chunks before scanning them. A translated stream always ends
        with its usage chunk, so it is hidden unless the client asked for it."""
        if provider == "azure-openai":
            return plain
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        translator: Translator
        if provider == "bedrock":
            translator = _BedrockTranslator(model)
        elif provider == "anthropic":
            from . import anthropic

            translator = anthropic.MessagesToChatStream(model)
        else:
            from . import gemini

            translator = gemini.GeminiToChatStream(model)
        return TranslatedScanner(translator, choices=plain.choices, hide_usage=not asked)


class Translator(Protocol):
    """A native stream to OpenAI chunks: `feed` upstream bytes as they come, `finish` at the body's end."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class TranslatedScanner(StreamScanner):
    """The relay's stream scanner (`sse.StreamScanner`) over a native stream: every piece the upstream
    sends is translated first, so completeness, usage and the error event are judged on OpenAI chunks."""

    __slots__ = ("_translator",)

    def __init__(self, translator: Translator, *, choices: int, hide_usage: bool) -> None:
        super().__init__(choices=choices, hide_usage=hide_usage)
        self._translator = translator

    def feed(self, data: bytes) -> bytes:
        try:
            translated = self._translator.feed(data)
        except TRANSLATION_ERRORS as exc:
            raise _malformed("a native stream event", exc) from None
        return super().feed(translated) if translated else b""

    def finish(self) -> bytes:
        try:
            tail = self._translator.finish()
        except TRANSLATION_ERRORS as exc:
            raise _malformed("the end of a native stream", exc) from None
        return (super().feed(tail) if tail else b"") + super().finish()


class _BedrockTranslator:
    """ConverseStream's event-stream frames (decoded by botocore) to OpenAI chunks."""

    def __init__(self, model: str) -> None:
        from . import bedrock
        from .aws import EventFrames

        self._frames = EventFrames()
        self._events = bedrock.ConverseToChatStream(model)

    def feed(self, data: bytes) -> bytes:
        return b"".join(
            self._events.event(kind, payload, error) for kind, payload, error in self._frames.feed(data)
        )

    def finish(self) -> bytes:
        return b""

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

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from modelroute_contract import PROVIDER_APIS, EndpointConfig

from .common import Outbound, UnsupportedError, loads_object

if TYPE_CHECKING:
    from . import anthropic, gemini

__all__ = ["Natives", "Outbound", "UnsupportedError"]

AZURE_PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
NATIVE_CONTENT_TYPE = "text/event-stream"


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
        """A whole native answer (or error) as the OpenAI API's JSON."""
        if provider == "azure-openai":
            return body
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

    def stream(self, provider: str, chunks: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
        """A native stream as OpenAI chat chunks (SSE), piece by piece as the upstream sends it."""
        if provider == "azure-openai":
            return chunks
        if provider == "bedrock":
            return _bedrock_stream(chunks, model)
        from . import anthropic, gemini

        return _sse_stream(
            anthropic.MessagesToChatStream(model)
            if provider == "anthropic"
            else gemini.GeminiToChatStream(model),
            chunks,
        )


async def _sse_stream(
    translator: anthropic.MessagesToChatStream | gemini.GeminiToChatStream, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    async for piece in chunks:
        out = translator.feed(piece)
        if out:
            yield out
    tail = translator.finish()
    if tail:
        yield tail


async def _bedrock_stream(chunks: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    from . import bedrock
    from .aws import EventFrames

    frames = EventFrames()
    translator = bedrock.ConverseToChatStream(model)
    async for piece in chunks:
        out = b"".join(
            translator.event(kind, payload, exception) for kind, payload, exception in frames.feed(piece)
        )
        if out:
            yield out

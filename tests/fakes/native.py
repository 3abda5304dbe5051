"""Fake native provider servers for tests: Azure OpenAI, Anthropic, Bedrock and Gemini (and Vertex AI),
each speaking its provider's own API on loopback, with the behaviours of `upstream.FakeUpstream`
(`delay`, `failNext`/`failStatus`, `hang`, `streamChunks`, `chunkDelay`, `streamEnd` cut/drop/error/empty,
`finishReason` length, `/_fake/die`).

Each checks the credentials the way its provider does (Azure `api-key` or an Entra bearer and an
`api-version`; Anthropic `x-api-key` and `anthropic-version`, or the bearer token Anthropic's 2.x SDK sends; Bedrock a SigV4 `authorization` for the
`bedrock` service and its region; Gemini `x-goog-api-key`, Vertex AI a bearer JWT) and answers a wrong
one with the provider's 401/403. Their faithfulness is shown by the official SDKs
(`tests/component/test_native_fakes.py`).

Tools: when a request offers tools and its conversation holds no tool result yet, the fake calls the
first tool with `{"city": "Paris"}`; otherwise it answers text (`Hello from <name>`), JSON when JSON
mode is asked (Gemini).

`python -m tests.fakes.native --provider anthropic --port P --name x` runs one as a process.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import struct
from typing import Any

from aiohttp import web

from tests.fakes.upstream import FakeUpstream, Seen

KEYS = {
    "azure-openai": "azure-key",
    "anthropic": "sk-ant-fake",
    "bedrock": "AKIDFAKE",
    "gemini": "gemini-key",
}
"""The credential each fake accepts (Bedrock: the access key id; its secret is not checked)."""
ENTRA_TOKEN = "entra-token-fake"
USAGE_IN, USAGE_OUT = 12, 5


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame (string headers only), checksums included."""
    encoded = b"".join(
        struct.pack("!B", len(name))
        + name.encode()
        + b"\x07"
        + struct.pack("!H", len(value))
        + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


class FakeNative(FakeUpstream):
    """One fake of `provider` (`azure-openai`, `anthropic`, `bedrock`, `gemini`); `url` is the replica URL."""

    def __init__(self, provider: str, name: str = "fake", host: str = "127.0.0.1", region: str = "") -> None:
        self.provider = provider
        self.region = region
        super().__init__(name, host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_app(self) -> web.Application:
        app = web.Application()
        if self.provider == "azure-openai":
            app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        elif self.provider == "anthropic":
            app.router.add_post("/v1/messages", self._anthropic)
        elif self.provider == "bedrock":
            app.router.add_post("/model/{model}/converse", self._bedrock)
            app.router.add_post("/model/{model}/converse-stream", self._bedrock)
        elif self.provider == "gemini":
            app.router.add_post("/v1/models/{call}", self._gemini)
            app.router.add_post("/v1beta/models/{call}", self._gemini)
            app.router.add_post(
                "/v1/projects/{project}/locations/{location}/publishers/google/models/{call}", self._gemini
            )
        else:
            raise ValueError(f"no fake for provider {self.provider!r}")
        app.router.add_get("/openai/models" if self.provider == "azure-openai" else "/v1/models", self._list_models)
        app.router.add_post("/_fake/behavior", self._set_behavior)
        app.router.add_post("/_fake/reset", self._reset)
        app.router.add_get("/_fake/requests", self._list_requests)
        app.router.add_post("/_fake/die", self._die)
        return app

    async def _seen(self, request: web.Request, model: str) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(request.path_qs, model, headers, body))
        return body

    def _wants_tool(self, offered: bool, history: str) -> bool:
        return (
            offered
            and '"tool_result"' not in history
            and '"toolResult"' not in history
            and ('"functionResponse"' not in history and '"role": "tool"' not in history)
        )

    async def _prelude(self, request: web.Request) -> web.StreamResponse | None:
        """Delay, hang or fail as told (the failure in the provider's error shape)."""
        failure = await self._misbehave(request)
        if failure is None:
            return None
        if failure.status == 499:
            return failure
        return self._native_error(failure.status, f"{self.name} failing on purpose")

    def _native_error(self, status: int, message: str) -> web.Response:
        headers = self._headers()
        if self.provider == "anthropic":
            kinds = {
                401: "authentication_error",
                429: "rate_limit_error",
                529: "overloaded_error",
                400: "invalid_request_error",
            }
            body: dict[str, Any] = {
                "type": "error",
                "error": {"type": kinds.get(status, "api_error"), "message": message},
            }
        elif self.provider == "bedrock":
            kinds = {
                403: "UnrecognizedClientException",
                429: "ThrottlingException",
                400: "ValidationException",
                503: "ServiceUnavailableException",
            }
            body = {"message": message}
            headers["x-amzn-errortype"] = (
                f"{kinds.get(status, 'InternalServerException')}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )
        elif self.provider == "gemini":
            states = {
                400: "INVALID_ARGUMENT",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                429: "RESOURCE_EXHAUSTED",
            }
            body = {"error": {"code": status, "message": message, "status": states.get(status, "INTERNAL")}}
        else:
            body = {"error": {"message": message, "type": "server_error", "code": str(status)}}
        return web.json_response(body, status=status, headers=headers)

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        """The provider's model list (what the operator's health probe reads), behind its credentials."""
        headers = request.headers
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if self.provider == "azure-openai":
            ok = bool(request.query.get("api-version")) and (headers.get("api-key") == KEYS["azure-openai"] or bearer == ENTRA_TOKEN)
        elif self.provider == "anthropic":
            ok = (headers.get("x-api-key") or bearer) == KEYS["anthropic"] and "anthropic-version" in headers
        else:
            ok = headers.get("x-goog-api-key") == KEYS["gemini"]
        if not ok:
            return self._native_error(401, "invalid credentials")
        failure = await self._prelude(request)
        if failure is not None:
            return failure
        return web.json_response({"data": [{"id": "fake-model"}], "models": [{"name": "models/fake-model"}]})

    # --- Azure OpenAI ---------------------------------------------------------------------------------

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        key = request.headers.get("api-key")
        bearer = request.headers.get("authorization", "")
        if key != KEYS["azure-openai"] and bearer != f"Bearer {ENTRA_TOKEN}":
            return self._native_error(
                401, "Access denied due to invalid subscription key or wrong API endpoint."
            )
        body = await request.json()
        if self._wants_tool(bool(body.get("tools")), json.dumps(body.get("messages"))):
            return await self._openai_tool_call(request, body)
        return await self._chat(request)

    async def _openai_tool_call(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """An OpenAI-style answer calling the first tool (Azure OpenAI)."""
        await self._seen(request, request.match_info["deployment"])
        failure = await self._prelude(request)
        if failure is not None:
            return failure
        name = body["tools"][0]["function"]["name"]
        call = {
            "id": "call_fake1",
            "type": "function",
            "function": {"name": name, "arguments": '{"city": "Paris"}'},
        }
        base = {
            "id": "chatcmpl-fake",
            "created": 0,
            "model": body.get("model"),
            "system_fingerprint": self.name,
        }
        if not body.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": 17},
            }
            return web.json_response(answer, headers=self._headers())
        response = web.StreamResponse(headers={**self._headers(), "content-type": "text/event-stream"})
        await response.prepare(request)
        for delta, finish in (
            ({"role": "assistant", "tool_calls": [{"index": 0, **call}]}, None),
            ({}, "tool_calls"),
        ):
            event = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": 17}
            await response.write(
                b"data: "
                + json.dumps(
                    {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                ).encode()
                + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _record(self, request: web.Request) -> dict[str, Any]:
        if self.provider != "azure-openai":
            return await super()._record(request)
        return await self._seen(request, request.match_info["deployment"])

    # --- Anthropic ------------------------------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await self._seen(request, "")
        self.requests[-1].model = str(body.get("model", ""))
        # the SDK of 2.x sends its key as a bearer token, the API and older SDKs as `x-api-key`
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if key != KEYS["anthropic"]:
            return self._native_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._native_error(400, "anthropic-version: header is required")
        if not isinstance(body.get("max_tokens"), int):
            return self._native_error(400, "max_tokens: Field required")
        failure = await self._prelude(request)
        if failure is not None:
            return failure
        tool = self._wants_tool(bool(body.get("tools")), json.dumps(body.get("messages")))
        name = body["tools"][0]["name"] if tool else ""
        stop = (
            "max_tokens" if self.behavior.finish_reason == "length" else ("tool_use" if tool else "end_turn")
        )
        text = self.behavior.content or f"Hello from {self.name}"
        if not body.get("stream"):
            block = (
                {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {"city": "Paris"}}
                if tool
                else {"type": "text", "text": text}
            )
            answer = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": 5 if self.behavior.wrong_shape else [block],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT},
            }
            return web.json_response(answer, headers=self._headers())
        response = web.StreamResponse(headers={**self._headers(), "content-type": "text/event-stream"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())

        end = self.behavior.stream_end
        if end == "empty":
            await response.write_eof()
            return response
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": 1},
        }
        await send("message_start", {"message": message})
        block = (
            {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}
            if tool
            else {"type": "text", "text": ""}
        )
        await send("content_block_start", {"index": 0, "content_block": block})
        await send("ping", {})
        pieces = (
            ['{"city": ', '"Paris"}']
            if tool
            else [
                f"{text} [{i}]" if i == 0 else f" [{i}]" for i in range(max(1, self.behavior.stream_chunks))
            ]
        )
        for i, piece in enumerate(pieces):
            if end in ("cut", "drop", "error") and i == self.behavior.stream_cut_after:
                return await self._native_end_early(request, response, end, send)
            delta = (
                {"type": "input_json_delta", "partial_json": piece}
                if tool
                else {"type": "text_delta", "text": piece}
            )
            await send("content_block_delta", {"index": 0, "delta": delta})
            if self.behavior.chunk_delay and not await self._pause(request, self.behavior.chunk_delay):
                return response
        await send("content_block_stop", {"index": 0})
        await send(
            "message_delta",
            {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": len(pieces)}},
        )
        await send("message_stop", {})
        await response.write_eof()
        return response

    async def _native_end_early(
        self, request: web.Request, response: web.StreamResponse, end: str, send: Any
    ) -> web.StreamResponse:
        if end == "error":
            await send("error", {"error": {"type": "overloaded_error", "message": f"{self.name} broke"}})
        if end == "drop":
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    # --- Bedrock --------------------------------------------------------------------------------------

    async def _bedrock(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        body = await self._seen(request, model)
        authorization = request.headers.get("authorization", "")
        scope = f"/{self.region}/bedrock/aws4_request" if self.region else "/bedrock/aws4_request"
        if (
            not authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEYS['bedrock']}/")
            or scope not in authorization
        ):
            return self._native_error(403, "The security token included in the request is invalid.")
        if "x-amz-date" not in request.headers:
            return self._native_error(403, "Missing X-Amz-Date")
        failure = await self._prelude(request)
        if failure is not None:
            return failure
        tools = (body.get("toolConfig") or {}).get("tools") or []
        tool = self._wants_tool(bool(tools), json.dumps(body.get("messages")))
        name = tools[0]["toolSpec"]["name"] if tool else ""
        stop = (
            "max_tokens" if self.behavior.finish_reason == "length" else ("tool_use" if tool else "end_turn")
        )
        text = self.behavior.content or f"Hello from {self.name}"
        if not request.path.endswith("converse-stream"):
            block = (
                {"toolUse": {"toolUseId": "tooluse_fake1", "name": name, "input": {"city": "Paris"}}}
                if tool
                else {"text": text}
            )
            answer = {
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": stop,
                "usage": {
                    "inputTokens": USAGE_IN,
                    "outputTokens": USAGE_OUT,
                    "totalTokens": USAGE_IN + USAGE_OUT,
                },
                "metrics": {"latencyMs": 1},
            }
            return web.json_response(answer, headers=self._headers())
        response = web.StreamResponse(
            headers={**self._headers(), "content-type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
            await response.write(event_frame(headers, json.dumps({**data, "p": "abcd"}).encode()))

        end = self.behavior.stream_end
        if end == "empty":
            await response.write_eof()
            return response
        await send("messageStart", {"role": "assistant"})
        if tool:
            await send(
                "contentBlockStart",
                {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_fake1", "name": name}}},
            )
        pieces = (
            ['{"city": ', '"Paris"}']
            if tool
            else [
                f"{text} [{i}]" if i == 0 else f" [{i}]" for i in range(max(1, self.behavior.stream_chunks))
            ]
        )
        for i, piece in enumerate(pieces):
            if end in ("cut", "drop", "error") and i == self.behavior.stream_cut_after:
                if end == "error":
                    headers = {
                        ":exception-type": "modelStreamErrorException",
                        ":content-type": "application/json",
                        ":message-type": "exception",
                    }
                    await response.write(
                        event_frame(headers, json.dumps({"message": f"{self.name} broke"}).encode())
                    )
                if end == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write_eof()
                return response
            delta = {"toolUse": {"input": piece}} if tool else {"text": piece}
            await send("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta})
            if self.behavior.chunk_delay and not await self._pause(request, self.behavior.chunk_delay):
                return response
        await send("contentBlockStop", {"contentBlockIndex": 0})
        await send("messageStop", {"stopReason": stop})
        await send(
            "metadata",
            {
                "usage": {
                    "inputTokens": USAGE_IN,
                    "outputTokens": len(pieces),
                    "totalTokens": USAGE_IN + len(pieces),
                },
                "metrics": {"latencyMs": 1},
            },
        )
        await response.write_eof()
        return response

    # --- Gemini / Vertex AI ---------------------------------------------------------------------------

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        body = await self._seen(request, model)
        vertex = "project" in request.match_info
        if vertex:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if token.count(".") != 2:
                return self._native_error(401, "Request had invalid authentication credentials.")
        elif request.headers.get("x-goog-api-key") != KEYS["gemini"]:
            return self._native_error(400, "API key not valid. Please pass a valid API key.")
        if method not in ("generateContent", "streamGenerateContent"):
            return self._native_error(404, f"method {method} not found")
        failure = await self._prelude(request)
        if failure is not None:
            return failure
        declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        tool = self._wants_tool(bool(declarations), json.dumps(body.get("contents")))
        config = body.get("generationConfig") or {}
        text = self.behavior.content or (
            json.dumps({"answer": f"from {self.name}"})
            if config.get("responseMimeType") == "application/json"
            else f"Hello from {self.name}"
        )
        finish = "MAX_TOKENS" if self.behavior.finish_reason == "length" else "STOP"

        def chunk(parts: list[dict[str, Any]], last: bool, out: int) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if last:
                candidate["finishReason"] = finish
            return {
                "candidates": [candidate],
                "modelVersion": model,
                "responseId": "resp_fake",
                "usageMetadata": {
                    "promptTokenCount": USAGE_IN,
                    "candidatesTokenCount": out,
                    "totalTokenCount": USAGE_IN + out,
                },
            }

        call = {"functionCall": {"name": declarations[0]["name"] if tool else "", "args": {"city": "Paris"}}}
        if method == "generateContent":
            return web.json_response(
                chunk([call] if tool else [{"text": text}], True, USAGE_OUT), headers=self._headers()
            )
        if request.query.get("alt") != "sse":
            return self._native_error(400, "this fake streams with alt=sse only")
        response = web.StreamResponse(headers={**self._headers(), "content-type": "text/event-stream"})
        await response.prepare(request)
        end = self.behavior.stream_end
        pieces: list[dict[str, Any]] = (
            [call]
            if tool
            else [
                {"text": f"{text} [{i}]" if i == 0 else f" [{i}]"}
                for i in range(max(1, self.behavior.stream_chunks))
            ]
        )
        if end == "empty":
            await response.write_eof()
            return response
        for i, part in enumerate(pieces):
            if end in ("cut", "drop", "error") and i == self.behavior.stream_cut_after:
                if end == "error":
                    error = {"error": {"code": 500, "message": f"{self.name} broke", "status": "INTERNAL"}}
                    await response.write(f"data: {json.dumps(error)}\r\n\r\n".encode())
                if end == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write_eof()
                return response
            event = chunk([part], i == len(pieces) - 1, i + 1)
            await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
            if self.behavior.chunk_delay and not await self._pause(request, self.behavior.chunk_delay):
                return response
        await response.write_eof()
        return response


async def _serve(provider: str, port: int, name: str, region: str) -> None:
    await FakeNative(provider, name, region=region).start(port)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--provider", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--region", default="")
    args = parser.parse_args()
    import os

    os.environ["FAKE_UPSTREAM_PROCESS"] = "1"
    asyncio.run(_serve(args.provider, args.port, args.name, args.region))


if __name__ == "__main__":
    main()

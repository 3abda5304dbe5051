"""A fake OpenAI-compatible model server for tests: answers, streams, fails, hangs or dies on command.

Use it in-process (`FakeUpstream`, start/stop on the test's loop) or as a process
(`python -m tests.fakes.upstream --port P --name eu-1`), controlled over its `/_fake/*` endpoints:

- `POST /_fake/behavior` with any of: `delay` (seconds before answering), `failNext` + `failStatus`
  (the next N requests fail), `failPercent` (+ `failStatus`), `finishReason`, `invalidJson` (content
  that is not JSON), `hang` (never answer), `streamChunks`, `chunkDelay`, `content`, `streamEnd` (how
  a stream ends: `done` as OpenAI does, `noDone` (the finish_reason but no `[DONE]`), `cut` (the body
  ends cleanly after `streamCutAfter` chunks: no finish_reason, no `[DONE]`), `drop` (the connection is
  dropped after `streamCutAfter` chunks, the chunked body unfinished), `empty` (a 200 and no event at
  all), `error` (an error event after `streamCutAfter` chunks));
- streams carry a usage chunk (and `"usage": null` in the others) only when the request asks for it
  with `stream_options.include_usage`, as OpenAI's do;
- `hang` holds requests until `release()` (in-process) lets them go on, or `stop()` drops them;
- `POST /_fake/reset`, `GET /_fake/requests` (every request seen: path, model, headers, body),
  `POST /_fake/die` (stop listening and drop connections; a process exits).

Every answer names the server (`x-fake-upstream` header, `system_fingerprint`) so tests can assert who
served what, and carries what OpenAI's do: its own `x-request-id` (`req_<name>_<n>`) and `x-ratelimit-*`
headers (the remaining requests count down from 1000).

`POST /v1/responses` speaks the Responses API: a `response` object, or (`stream: true`) typed events from
`response.created` to `response.completed` (with `response.usage`), no `[DONE]`; `streamEnd` `cut`,
`drop` and `error` end it early as for chat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Behavior:
    """How the fake answers the next requests."""

    delay: float = 0.0
    fail_next: int = 0
    fail_status: int = 500
    fail_percent: float = 0.0
    finish_reason: str = "stop"
    invalid_json: bool = False
    wrong_shape: bool = False
    """Native fakes: answer valid JSON whose fields have the wrong types (an upstream's protocol error)."""
    hang: bool = False
    stream_chunks: int = 3
    chunk_delay: float = 0.0
    content: str = ""
    stream_end: str = "done"
    stream_cut_after: int = 1

    def update(self, changes: dict[str, Any]) -> None:
        """Apply camelCase or snake_case changes."""
        for key, value in changes.items():
            name = "".join("_" + c.lower() if c.isupper() else c for c in key)
            if not hasattr(self, name):
                raise ValueError(f"unknown behavior {key!r}")
            setattr(self, name, value)


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class FakeUpstream:
    """The fake server; `url` is the OpenAI-style base URL (ending in /v1)."""

    def __init__(self, name: str = "fake", host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.behavior = Behavior()
        self.requests: list[Seen] = []
        self.disconnects: list[float] = []
        """`time.monotonic()` at which a client was seen gone while its answer was pending or streaming."""
        self._runner: web.AppRunner | None = None
        self._answers = 0
        self._hanging: list[asyncio.Future[None]] = []
        self.app = self._make_app()

    @property
    def url(self) -> str:
        """Base URL to put in a replica's `url`."""
        return f"http://{self.host}:{self.port}/v1"

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/_fake/behavior", self._set_behavior)
        app.router.add_post("/_fake/reset", self._reset)
        app.router.add_get("/_fake/requests", self._list_requests)
        app.router.add_post("/_fake/die", self._die)
        return app

    async def start(self, port: int = 0) -> FakeUpstream:
        """Listen on host:port (0 picks a free port)."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        """Die: stop listening and drop every connection, hanging ones included."""
        for future in self._hanging:
            if not future.done():
                future.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def held(self) -> int:
        """Requests hanging right now (`hang`), waiting for `release` or `stop`."""
        return sum(1 for future in self._hanging if not future.done())

    def release(self) -> None:
        """Stop hanging: the held requests go on and are answered as configured otherwise."""
        self.behavior.hang = False
        for future in self._hanging:
            if not future.done():
                future.set_result(None)
        self._hanging.clear()

    async def release_and_stop(self) -> None:
        """`release`, then `stop`."""
        self.release()
        await self.stop()

    def reset(self) -> None:
        """Normal answers, no recorded requests."""
        self.behavior = Behavior()
        self._answers = 0
        self.requests.clear()
        self.disconnects.clear()

    def set(self, **changes: Any) -> None:
        """Change the behavior (`fake.set(fail_next=2, fail_status=503)`)."""
        self.behavior.update(changes)

    def models_seen(self) -> list[str]:
        """The `model` of every request received."""
        return [r.model for r in self.requests]

    # --- API ------------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.requests.append(
            Seen(
                request.path,
                str(body.get("model", "")),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        return body

    async def _pause(self, request: web.Request, seconds: float) -> bool:
        """Wait `seconds`, watching the client's connection (every 5 ms); False, recorded in
        `disconnects`, as soon as it is seen closed."""
        deadline = time.monotonic() + seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnects.append(time.monotonic())
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(0.005, left))

    async def _misbehave(self, request: web.Request | None = None) -> web.Response | None:
        """Delay, hang or fail as configured; None to answer normally."""
        b = self.behavior
        if b.delay and request is not None:
            if not await self._pause(request, b.delay):
                return web.Response(status=499)  # nobody left to read it
        elif b.delay:
            await asyncio.sleep(b.delay)
        if b.hang:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hanging.append(future)
            await future
        if b.fail_next > 0:
            b.fail_next -= 1
            return self._error(b.fail_status)
        if b.fail_percent and random.random() * 100 < b.fail_percent:
            return self._error(b.fail_status)
        return None

    def _error(self, status: int) -> web.Response:
        body = {"error": {"message": f"{self.name} failing on purpose", "type": "server_error", "code": None}}
        return web.json_response(body, status=status, headers=self._headers())

    def _headers(self) -> dict[str, str]:
        self._answers += 1
        return {
            "x-fake-upstream": self.name,
            "x-request-id": f"req_{self.name}_{self._answers}",
            "x-ratelimit-limit-requests": "1000",
            "x-ratelimit-remaining-requests": str(max(0, 1000 - self._answers)),
            "x-ratelimit-reset-requests": "60ms",
        }

    def _content(self, body: dict[str, Any]) -> str:
        b = self.behavior
        if b.invalid_json:
            return "this is {not json"
        if b.content:
            return b.content
        wanted = body.get("response_format") or (body.get("text") or {}).get("format") or {}
        if wanted.get("type") in ("json_object", "json_schema"):
            return json.dumps({"answer": f"from {self.name}"})
        return f"Hello from {self.name}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._misbehave(request)
        if failure is not None:
            return failure
        content = self._content(body)
        if body.get("stream"):
            return await self._stream(request, body, content)
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": self.behavior.finish_reason,
                }
            ],
            "usage": usage,
        }
        return web.json_response(answer, headers=self._headers())

    async def _stream(self, request: web.Request, body: dict[str, Any], content: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={**self._headers(), "content-type": "text/event-stream"})
        await response.prepare(request)
        chunks = max(1, self.behavior.stream_chunks)
        end = self.behavior.stream_end
        with_usage = (body.get("stream_options") or {}).get("include_usage") is True
        extra: dict[str, Any] = {"usage": None} if with_usage else {}
        cut_at = 0 if end == "empty" else min(self.behavior.stream_cut_after, chunks)
        for index in range(chunks):
            if end in ("cut", "drop", "error", "empty") and index == cut_at:
                return await self._end_early(request, response, end)
            delta = {"content": f"{content} [{index}]" if index == 0 else f" [{index}]"}
            finish = self.behavior.finish_reason if index == chunks - 1 else None
            event = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model"),
                "system_fingerprint": self.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if self.behavior.chunk_delay and not await self._pause(request, self.behavior.chunk_delay):
                return response  # the client left: stop generating
        if with_usage:
            usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
            event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if end != "noDone":
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _end_early(
        self, request: web.Request, response: web.StreamResponse, end: str
    ) -> web.StreamResponse:
        """End a stream before its answer is complete, the way `streamEnd` says."""
        if end == "error":
            error = {
                "error": {"message": f"{self.name} broke", "type": "server_error", "code": "engine_dead"}
            }
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
        if end == "drop":
            assert request.transport is not None
            request.transport.close()  # no terminating chunk: the client sees the body cut
            return response
        await response.write_eof()
        return response

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._misbehave()
        if failure is not None:
            return failure
        answer = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "text": self._content(body),
                    "finish_reason": self.behavior.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
        }
        return web.json_response(answer, headers=self._headers())

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._misbehave()
        if failure is not None:
            return failure
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        answer = {
            "object": "list",
            "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)],
            "usage": {"prompt_tokens": 3 * count, "total_tokens": 3 * count},
        }
        return web.json_response(answer, headers=self._headers())

    def _response_object(self, body: dict[str, Any], content: str, status: str) -> dict[str, Any]:
        """A Responses API `response`: one output message when completed, none while in progress."""
        output = [
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": content, "annotations": []}],
            }
        ]
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": body.get("model"),
            "output": output if status == "completed" else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "text": {"format": {"type": "text"}},
            "usage": {
                "input_tokens": 12,
                "output_tokens": 5,
                "total_tokens": 17,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
            if status == "completed"
            else None,
        }

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failure = await self._misbehave(request)
        if failure is not None:
            return failure
        content = self._content(body)
        if not body.get("stream"):
            return web.json_response(
                self._response_object(body, content, "completed"), headers=self._headers()
            )
        response = web.StreamResponse(headers={**self._headers(), "content-type": "text/event-stream"})
        await response.prepare(request)
        b = self.behavior
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self._response_object(body, content, "in_progress")}
        ]
        for index in range(max(1, b.stream_chunks)):
            delta = content if index == 0 else f" [{index}]"
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_fake",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                }
            )
        events.append(
            {"type": "response.completed", "response": self._response_object(body, content, "completed")}
        )
        for number, event in enumerate(events):
            if b.stream_end in ("cut", "drop", "error") and number == b.stream_cut_after:
                if b.stream_end == "error":
                    error = {
                        "type": "error",
                        "code": "engine_dead",
                        "message": f"{self.name} broke",
                        "param": None,
                    }
                    await response.write(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
                    await response.write_eof()
                    return response
                return await self._end_early(request, response, b.stream_end)
            event["sequence_number"] = number
            data = json.dumps(event).encode()
            await response.write(b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n")
            if b.chunk_delay and not await self._pause(request, b.chunk_delay):
                return response
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    # --- control --------------------------------------------------------------------------------------

    async def _set_behavior(self, request: web.Request) -> web.Response:
        try:
            self.behavior.update(await request.json())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.behavior))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _list_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.requests])

    async def _die(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: loop.create_task(self.stop()))
        if os.environ.get("FAKE_UPSTREAM_PROCESS"):
            loop.call_later(0.1, os._exit, 0)
        return web.json_response({"dying": True})


async def _serve(port: int, name: str, host: str = "127.0.0.1") -> None:
    fake = await FakeUpstream(name, host).start(port)
    print(f"fake upstream {name} listening on {fake.url}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Run one fake upstream as a process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="fake")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (the cluster tests use the node link's host side)",
    )
    args = parser.parse_args()
    os.environ["FAKE_UPSTREAM_PROCESS"] = "1"
    asyncio.run(_serve(args.port, args.name, args.host))


if __name__ == "__main__":
    main()

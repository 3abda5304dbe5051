"""Bounded chaos run: mixed public and EU personal traffic through a real 2-worker sidecar while its
regional upstreams fail on a schedule, configs are pushed and a worker is SIGKILLed; then the figures.

    .venv/bin/python bench/chaos.py                 # 180 s of traffic
    .venv/bin/python bench/chaos.py --seconds 60 --json

What runs (loopback only, every loop bounded in count and time):

- three recording fake upstreams (`eu-west-1`, `eu-central-1`, `us-east-1`), raw asyncio HTTP/1.1
  servers in this process, so that each connection is ours to hang, cut or drop. Every POST that reaches
  one is recorded: region, endpoint (from the URL path), `x-request-id`, body hash, connection id, and
  the chaos marker `chaos-mark:<n>:eu|pub` that the load generator embeds in the prompt text;
- the RouterConfig compiled (as `modelroute render` does) from `examples/multi-region-eu-residency/`,
  with every replica URL pointed at its region's fake (`http://127.0.0.1:P/<endpoint>/v1`, so a record
  names the endpoint) and three changes for a bounded run, all outside classification except the last:
  `resilience` timings shortened (perTryTimeout 2s, deadline 10s, ejection 1-2s) and a `card` detector
  added next to the example's `email` and `iban`, so card numbers carry EU personal data here too;
- `python -m modelroute_sidecar.main --workers 2` as a pod in eu-west-1, with a JSON-lines audit log;
- the traffic: the cases in `CASES` (public, personal, and the adversarial encodings of issue #12),
  chat streamed and not, completions and embeddings, half through the official `openai` SDK and half
  as raw HTTP (aiohttp, UTF-8 bytes as typed), at `--rate` requests/s with `--concurrency` in flight;
- the faults in `build_schedule`: each upstream in turn killed and restarted, hung, slowed, answering
  500, cutting streams (abruptly, and cleanly without `[DONE]`), dropping the connection after reading
  a POST; both EU regions down at once; the same config re-pushed and a changed one pushed through the
  admin port; one worker SIGKILLed (its parent restarts it).

The figures (printed, and as one JSON line with `--json`), each counted only when it really is one:

- `residency_violations`: POSTs recorded by us-east-1 whose marker says the request carried EU personal
  data under the policy (the marker is set from the case's ground truth, and must match the ledger);
- `client_errors_while_compliant_up`: requests that failed (non-2xx, transport error, stream error or
  cut) although, from `MARGIN` seconds before they started until they ended, a replica allowed for their
  class ran normally (or only slowly) by the schedule. Not counted: a stream cut by a fake after its
  first chunk that the client saw as an error event (that is the correct answer), transport failures of
  requests in flight on the worker when it was SIGKILLed, and a 400 refusing a lowered declaration
  (issue #12 allows refusing instead of keeping the request strict);
- `duplicate_posts`: POSTs an upstream saw for a request id beyond the attempts the sidecar's audit log
  records for that request at that replica (an invisible resend of one attempt); requests whose audit
  line was lost with the killed worker are left out and counted in `unaudited_requests`;
- `streams_cut_without_error`: streamed answers that ended without `[DONE]`/finish and without an error
  event (the SIGKILLed worker's own streams are left out, counted in `kill_affected`);
- `requests_sent`, and the RSS of the sidecar (parent + workers) at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import yaml

REPO = Path(__file__).resolve().parents[1]

if str(REPO) not in sys.path:  # run as `python bench/<script>.py`: only bench/ itself is on sys.path
    sys.path.insert(0, str(REPO))
from tests.ports import free_port  # noqa: E402  (one definition of how harnesses pick ports)

EXAMPLE = REPO / "examples" / "multi-region-eu-residency"
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
EU_REGIONS = frozenset({"eu-west-1", "eu-central-1"})
SIDECAR_REGION = "eu-west-1"
ADMIN_TOKEN = "chaos-admin-token"
MODEL = "assistant"
MARKER = re.compile(rb"chaos-mark:(\d+):(eu|pub)")
PER_TRY_TIMEOUT = 2.0
DEADLINE = 10.0
MAX_EJECTION = 2.0
MARGIN = PER_TRY_TIMEOUT + MAX_EJECTION + 1.0
"""A replica counts as up from this long after it was restored: a sidecar may still hold it ejected
(up to MAX_EJECTION) and a request started during the fault may still wait on it (PER_TRY_TIMEOUT)."""
CLIENT_TIMEOUT = DEADLINE + 5.0
KILL_GRACE = 1.0
"""Transport failures that start this long after the worker SIGKILL are blamed on it (pooled client
connections to the dead worker fail on their next use)."""
UP_MODES = frozenset({"normal", "slow"})
SLOW_SECONDS = 0.6

# --- the recording fake upstream ---------------------------------------------------------------------------


@dataclass
class Seen:
    """One POST a fake received."""

    region: str
    endpoint: str
    path: str
    request_id: str
    body_sha: str
    connection: int
    mark: int
    mark_eu: bool
    mode: str
    at: float


class _FakeConnection(asyncio.Protocol):
    """One upstream connection: parses requests with llhttp and answers as the fake's mode says."""

    def __init__(self, fake: RecordingUpstream) -> None:
        self.fake = fake
        self.id = next(fake.connection_ids)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.fake.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake.connections.discard(self)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        task = asyncio.get_running_loop().create_task(
            self.answer(method, self.url.decode(), b"".join(self.body))
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, method: bytes, path: str, body: bytes) -> None:
        fake = self.fake
        if method != b"POST":
            self.send(200, b'{"object":"list","data":[]}')
            return
        mode = fake.mode
        found = MARKER.search(body)
        parts = path.strip("/").split("/")
        seen = Seen(
            region=fake.region,
            endpoint=parts[0] if len(parts) > 2 else "",
            path=path,
            request_id=self.headers.get(b"x-request-id", b"").decode("latin-1"),
            body_sha=hashlib.sha256(body).hexdigest()[:16],
            connection=self.id,
            mark=int(found.group(1)) if found else -1,
            mark_eu=bool(found and found.group(2) == b"eu"),
            mode=mode,
            at=time.monotonic(),
        )
        fake.seen.append(seen)
        if mode == "hung":
            return  # accepted and read; never answered (the connection stays open until the fake dies)
        if mode == "drop":
            assert self.transport is not None
            self.transport.close()
            return
        if mode == "error":
            self.send(500, b'{"error":{"message":"failing on purpose","type":"server_error","code":null}}')
            return
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        try:
            request = json.loads(body)
        except ValueError:
            self.send(400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
            return
        if path.endswith("/chat/completions") and request.get("stream") is True:
            await self.stream(request, mode, seen)
            return
        self.send(200, json.dumps(answer_for(path, request, fake.region)).encode())

    def send(self, status: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: b"OK", 400: b"Bad Request", 500: b"Internal Server Error"}[status]
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
            status, reason, len(payload),
        )  # fmt: skip
        self.transport.write(head + payload)

    async def stream(self, request: dict[str, Any], mode: str, seen: Seen) -> None:
        assert self.transport is not None
        write = self.transport.write
        write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        chunks = 4
        for index in range(chunks):
            finish = "stop" if index == chunks - 1 else None
            event = {
                "id": "chatcmpl-chaos",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": request.get("model"),
                "choices": [{"index": 0, "delta": {"content": f"[{index}]"}, "finish_reason": finish}],
            }
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            write(b"%x\r\n%s\r\n" % (len(data), data))
            await asyncio.sleep(0.02)
            if index == 0 and mode == "cut":
                self.fake.cut.add(seen.request_id)
                self.transport.abort()  # mid-way, inside the chunked body
                return
            if index == 0 and mode == "cutclean":
                self.fake.cut.add(seen.request_id)
                write(b"0\r\n\r\n")  # a clean end of the body without finish_reason or [DONE]
                return
        done = b"data: [DONE]\n\n"
        write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))


def answer_for(path: str, request: dict[str, Any], region: str) -> dict[str, Any]:
    """A small OpenAI-shaped answer for the API of `path`."""
    usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    if path.endswith("/embeddings"):
        inputs = request.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(count)]
        return {"object": "list", "model": request.get("model"), "data": data, "usage": usage}
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        choice = {"index": 0, "text": f"from {region}", "finish_reason": "stop", "logprobs": None}
        return {"id": "cmpl-chaos", "object": "text_completion", "created": int(time.time()),
                "model": request.get("model"), "choices": [choice], "usage": usage}  # fmt: skip
    message = {"role": "assistant", "content": f"from {region}"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "chatcmpl-chaos", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model"), "system_fingerprint": region, "choices": [choice],
            "usage": usage}  # fmt: skip


class RecordingUpstream:
    """One region's fake model server; `mode` is how it treats the next requests."""

    def __init__(self, region: str, port: int) -> None:
        self.region = region
        self.port = port
        self.mode = "normal"
        self.seen: list[Seen] = []
        self.cut: set[str] = set()
        """Request ids whose stream this fake cut after the first chunk."""
        self.connections: set[_FakeConnection] = set()
        self.connection_ids = itertools.count(1)
        self.server: asyncio.AbstractServer | None = None

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.port}/{endpoint}/v1"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _FakeConnection(self), "127.0.0.1", self.port, reuse_address=True, backlog=512
        )

    async def kill(self) -> None:
        """Like a crashed process: stop listening and reset every connection."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections):
            conn.abort()


# --- the configuration -----------------------------------------------------------------------------------


def example_manifests(fakes: dict[str, RecordingUpstream]) -> list[dict[str, Any]]:
    """The example's objects, replica URLs at the fakes, resilience shortened, a card detector added."""
    docs: list[dict[str, Any]] = []
    for file in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            if doc["kind"] == "ModelEndpoint":
                for replica in doc["spec"]["replicas"]:
                    replica["url"] = fakes[replica["region"]].url(doc["metadata"]["name"])
            if doc["kind"] == "RoutingPolicy":
                doc["spec"]["resilience"].update(
                    perTryTimeout=f"{PER_TRY_TIMEOUT:g}s", deadline=f"{DEADLINE:g}s",
                    baseEjectionTime="1s", maxEjectionTime=f"{MAX_EJECTION:g}s",
                )  # fmt: skip
                detectors = doc["spec"]["residency"]["detectors"]
                if not any(d["kind"] == "card" for d in detectors):
                    detectors.append({"kind": "card", "dataClass": "eu-personal"})
            docs.append(doc)
    return docs


def compile_config(docs: list[dict[str, Any]], workdir: Path, sequence: int) -> str:
    """Compile as `modelroute render` does; set the config's `sequence` when the contract has one."""
    sys.path[:0] = [str(REPO / "operator"), str(REPO / "sidecar")]
    from modelroute_contract import RouterConfig
    from modelroute_operator.logic.compiler import compile_namespace
    from modelroute_operator.logic.manifests import load_manifests

    source = workdir / f"manifests-{sequence}.yaml"
    source.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    manifests = load_manifests(source, namespace="chaos")
    result = compile_namespace(manifests.for_namespace("chaos"))
    if manifests.errors or result.errors or result.config is None:
        raise SystemExit(f"the example does not compile: {manifests.errors} {result.errors}")
    config = result.config
    if "sequence" in RouterConfig.model_fields:
        config = config.model_copy(update={"sequence": sequence}).seal()
    return config.to_json()


def changed_docs(docs: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The same objects with a routing-irrelevant change (llama-8b's price): a new config version."""
    changed = copy.deepcopy(docs)
    for doc in changed:
        if doc["kind"] == "ModelEndpoint" and doc["metadata"]["name"] == "llama-8b":
            doc["spec"]["pricing"]["inputPerMillion"] = round(0.05 + 0.01 * step, 4)
    return changed


# --- the traffic ------------------------------------------------------------------------------------------

EMAIL = "jane.doe@example.com"
IBAN = "DE89370400440532013000"  # checksum valid
CARD = "4111111111111111"  # Luhn valid


@dataclass(frozen=True)
class Case:
    """One kind of request; `personal` is the ground truth under the chaos policy."""

    label: str
    api: str
    personal: bool
    text: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    shape: str = "plain"
    """Where the text goes: plain (user message), tool-args, tool-result, name, user, part, list."""
    downgrade: bool = False
    """Declares a class lower than the truth: a 400 refusal is an accepted answer."""


PUBLIC = (("x-modelroute-data-class", "public"),)
CASES: tuple[Case, ...] = (
    Case("public", "chat", False, "Summarise the plot of Hamlet in two sentences."),
    Case("public-declared", "chat", False, "What is the capital of France?", PUBLIC),
    Case("public-bad-iban", "chat", False, "Order DE00 1234 5678 9012 3456 78 shipped."),
    Case("public-completions", "completions", False, "Once upon a time", shape="list"),
    Case("public-embeddings", "embeddings", False, "a sentence to embed", shape="list"),
    Case("email", "chat", True, f"Draft a reply to {EMAIL} about her refund."),
    Case("email-upper", "chat", True, "Write to JANE.DOE@EXAMPLE.COM today."),
    Case("header-public-email", "chat", True, f"Forward this to {EMAIL}.", PUBLIC, downgrade=True),
    Case(
        "tenant-default",
        "chat",
        True,
        "What are your opening hours?",
        (("x-modelroute-tenant", "globex-sarl"),),
    ),
    Case(
        "tenant-declares-public",
        "chat",
        True,
        "Check my order status.",
        (("x-modelroute-tenant", "acme-gmbh"), *PUBLIC),
        downgrade=True,
    ),
    Case(
        "tenant-other-case", "chat", True, "Check my order status.", (("x-modelroute-tenant", "ACME-GmbH"),)
    ),
    Case("fullwidth-at", "chat", True, "Mail jane.doe\uff20example.com please."),
    Case("pct40", "chat", True, "Mail jane.doe%40example.com please."),
    Case("cyrillic-domain", "chat", True, "Mail jane.doe@ex\u0430mple.com please."),
    Case("idn-domain", "chat", True, "Mail kontakt@b\u00fccher.de please."),
    Case("iban-spaces", "chat", True, "Pay to DE89 3704 0044 0532 0130 00 today."),
    Case("iban-dashes", "chat", True, "Pay to DE89-3704-0044-0532-0130-00 today."),
    Case("iban-nbsp", "chat", True, "Pay to DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000 today."),
    Case("card-spaces", "chat", True, "Charge 4111 1111 1111 1111 now."),
    Case("card-dashes", "chat", True, "Charge 4111-1111-1111-1111 now."),
    Case("card-nbsp", "chat", True, "Charge 4111\u00a01111\u00a01111\u00a01111 now."),
    Case("tool-args", "chat", True, EMAIL, shape="tool-args"),
    Case("tool-result", "chat", True, f"customer: {EMAIL}", shape="tool-result"),
    Case("name-field", "chat", True, EMAIL, shape="name"),
    Case("user-field", "chat", True, EMAIL, shape="user"),
    Case("content-part", "chat", True, f"call {IBAN}", shape="part"),
    Case("completions-list", "completions", True, f"contact {EMAIL}", shape="list"),
    Case("embeddings-list", "embeddings", True, f"IBAN {IBAN}", shape="list"),
)
# `name-field`: OpenAI documents `name` as [a-zA-Z0-9_-]; a careless client writes the address there
# anyway, the sidecar forwards it, so it must be classified.


def build_body(case: Case, mark: str, stream: bool) -> dict[str, Any]:
    """The request body of `case`, the marker in its first text (never where the personal data is)."""
    if case.api in ("completions", "embeddings"):
        items = [f"{mark} hello", case.text]
        key = "prompt" if case.api == "completions" else "input"
        return {"model": MODEL, key: items}
    intro = {"role": "system", "content": f"{mark} You are a helpful assistant."}
    messages: list[dict[str, Any]]
    body: dict[str, Any] = {"model": MODEL}
    if case.shape == "tool-args":
        call = {"id": "call_1", "type": "function",
                "function": {"name": "send_mail", "arguments": json.dumps({"to": case.text})}}  # fmt: skip
        messages = [intro, {"role": "user", "content": "Send the mail."},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sent"}]  # fmt: skip
    elif case.shape == "tool-result":
        call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        messages = [intro, {"role": "user", "content": "Who is the customer?"},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": case.text}]  # fmt: skip
    elif case.shape == "name":
        messages = [intro, {"role": "user", "name": case.text, "content": "Hello there."}]
    elif case.shape == "user":
        messages = [intro, {"role": "user", "content": "Hello there."}]
        body["user"] = case.text
    elif case.shape == "part":
        parts = [{"type": "text", "text": "Look at this:"}, {"type": "text", "text": case.text}]
        messages = [intro, {"role": "user", "content": parts}]
    else:
        messages = [intro, {"role": "user", "content": case.text}]
    body["messages"] = messages
    if stream:
        body["stream"] = True
    return body


@dataclass
class Sent:
    """One client request and how it ended."""

    number: int
    request_id: str
    label: str
    api: str
    personal: bool
    downgrade: bool
    stream: bool
    client: str
    started: float
    ended: float = 0.0
    status: int = 0
    """HTTP status; 0 when no answer came (transport failure, client timeout)."""
    outcome: str = ""
    """ok, http-error, transport, timeout, stream-error-event, stream-cut."""
    code: str = ""
    detail: str = ""


async def send_raw(
    session: Any, base: str, sent: Sent, body: dict[str, Any], headers: dict[str, str]
) -> None:
    import aiohttp

    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}
    payload = json.dumps(body, ensure_ascii=False).encode()
    try:
        async with session.post(
            base + path[sent.api], data=payload, headers={**headers, "content-type": "application/json"}
        ) as response:
            sent.status = response.status
            if response.status != 200:
                text = await response.text()
                sent.outcome, sent.code, sent.detail = "http-error", error_code(text), text[:200]
                return
            if not sent.stream:
                await response.read()
                sent.outcome = "ok"
                return
            done = error = finished = False
            async for line in response.content:
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        error = True
                    finished |= any(c.get("finish_reason") for c in event.get("choices") or ())
            sent.outcome = "stream-error-event" if error else ("ok" if done and finished else "stream-cut")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        sent.outcome, sent.detail = ("stream-cut" if sent.status == 200 else "transport"), repr(exc)[:200]
    except (aiohttp.ClientError, OSError) as exc:
        sent.outcome, sent.detail = "transport", repr(exc)[:200]


async def send_sdk(client: Any, sent: Sent, body: dict[str, Any], headers: dict[str, str]) -> None:
    import openai

    kwargs = {k: v for k, v in body.items()}
    kwargs["extra_headers"] = headers
    try:
        if sent.api == "chat":
            if sent.stream:
                stream = await client.chat.completions.create(**kwargs)
                sent.status = 200
                finished = False
                try:
                    async for chunk in stream:
                        finished |= any(c.finish_reason for c in chunk.choices)
                finally:
                    await stream.close()
                sent.outcome = "ok" if finished else "stream-cut"
                return
            await client.chat.completions.create(**kwargs)
        elif sent.api == "completions":
            await client.completions.create(**kwargs)
        else:
            await client.embeddings.create(**kwargs)
        sent.status, sent.outcome = 200, "ok"
    except openai.APIStatusError as exc:
        sent.status, sent.outcome = exc.status_code, "http-error"
        sent.code = exc.code or "" if isinstance(exc.code, str) else ""
        sent.detail = str(exc)[:200]
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        sent.outcome = "stream-cut" if sent.status == 200 else "transport"
        sent.detail = repr(exc)[:200]
    except openai.APIError as exc:  # an error event inside the stream
        sent.outcome, sent.detail = (
            ("stream-error-event" if sent.status == 200 else "transport"),
            str(exc)[:200],
        )


def error_code(text: str) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(json.loads(text)["error"].get("code") or "")
    return ""


# --- the fault schedule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """From `start` to `end` (seconds into the run) the fakes in `regions` are in `mode`."""

    start: float
    end: float
    mode: str
    regions: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    """A point action: `push-same`, `push-changed` or `kill-worker`."""

    at: float
    action: str


def build_schedule(seconds: float) -> tuple[list[Fault], list[Event]]:
    """Faults one after another with a normal gap between them; point events in the gaps."""
    plan: list[tuple[str, tuple[str, ...]]] = [
        ("kill", ("eu-west-1",)),
        ("hung", ("eu-west-1",)),
        ("cut", ("eu-west-1",)),
        ("error", ("eu-west-1",)),
        ("drop", ("eu-west-1",)),
        ("slow", ("eu-west-1",)),
        ("cutclean", ("eu-west-1",)),
        ("hung", ("eu-central-1",)),
        ("kill", ("us-east-1",)),
        ("kill", ("eu-west-1", "eu-central-1")),  # only the US up: EU data must fail closed
        ("drop", ("eu-west-1", "eu-central-1")),
        ("error", ("eu-west-1", "eu-central-1")),
    ]
    warmup = min(3.0, seconds * 0.05)
    slot = (seconds - warmup) / len(plan)
    faults = [
        Fault(warmup + i * slot, warmup + i * slot + slot * 0.65, mode, regions)
        for i, (mode, regions) in enumerate(plan)
    ]
    gap = lambda i: warmup + i * slot + slot * 0.8  # noqa: E731 - in the normal gap after fault i
    events = [Event(gap(1), "push-same"), Event(gap(3), "push-changed"), Event(gap(4), "kill-worker"),
              Event(gap(6), "push-same"), Event(gap(8), "push-changed")]  # fmt: skip
    return faults, events


def mode_at(faults: list[Fault], region: str, t: float) -> str:
    for fault in faults:
        if region in fault.regions and fault.start <= t < fault.end:
            return fault.mode
    return "normal"


def up_throughout(faults: list[Fault], region: str, start: float, end: float) -> bool:
    """Whether `region` ran normally (or slowly) from MARGIN before `start` until `end`."""
    for fault in faults:
        if (
            region in fault.regions
            and fault.mode not in UP_MODES
            and fault.start < end
            and fault.end > start - MARGIN
        ):
            return False
    return True


# --- the sidecar process -----------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children, MiB."""
    total = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    audit: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_sidecar(config: str, workdir: Path) -> Sidecar:
    config_file = workdir / "routerConfig.json"
    config_file.write_text(config)
    port, admin_port = free_port(), free_port()
    audit, log = workdir / "audit.jsonl", workdir / "sidecar.log"
    command = [
        sys.executable, "-m", "modelroute_sidecar.main", "--workers", "2", "--host", "127.0.0.1",
        "--port", str(port), "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
        "--config-file", str(config_file), "--config-poll-seconds", "3600", "--region", SIDECAR_REGION,
        "--pod-name", "chaos-0", "--secrets-dir", str(workdir / "secrets"), "--audit-log", str(audit),
        "--log-level", "WARNING",
    ]  # fmt: skip
    path = os.pathsep.join([str(REPO / "sidecar"), str(REPO / "operator"), str(REPO)])
    env = {**os.environ, "MODELROUTE_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": path}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Sidecar(process, port, admin_port, audit, log)


async def wait_serving(sidecar: Sidecar, within: float = 60.0) -> None:
    """Until both workers answer a request (each worker gets its own connection, SO_REUSEPORT spreads
    them, so a run of 20 fresh connections answered 200 means the pod serves)."""
    import aiohttp

    deadline = time.monotonic() + within
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "ping"}]})
    while time.monotonic() < deadline:
        if sidecar.process.poll() is not None:
            raise SystemExit(f"the sidecar exited; see {sidecar.log}")
        ok = 0
        with contextlib.suppress(aiohttp.ClientError, OSError):
            for _ in range(20):
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        sidecar.url + "/v1/chat/completions",
                        data=body,
                        headers={"content-type": "application/json"},
                    ) as response,
                ):
                    ok += response.status == 200
        if ok == 20 and len(children(sidecar.process.pid)) == 2:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"the sidecar did not serve within {within}s; see {sidecar.log}")


async def push(sidecar: Sidecar, text: str) -> int:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.put(
            f"http://127.0.0.1:{sidecar.admin_port}/config", data=text.encode(),
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=aiohttp.ClientTimeout(total=20),
        ) as response:  # fmt: skip
            await response.read()
            return response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0


# --- the run -----------------------------------------------------------------------------------------------


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    pushes: list[tuple[float, str, int]] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    rss_start: float = 0.0
    rss_end: float = 0.0


async def drive(
    seconds: float, rate: float, concurrency: int, workdir: Path, say: Callable[[str], None]
) -> tuple[Run, dict[str, RecordingUpstream], list[Fault], list[dict[str, Any]]]:
    import aiohttp
    import openai

    fakes = {r: RecordingUpstream(r, free_port()) for r in REGIONS}
    for fake in fakes.values():
        await fake.start()
    docs = example_manifests(fakes)
    sequence = itertools.count(1)
    live = compile_config(docs, workdir, next(sequence))
    sidecar = start_sidecar(live, workdir)
    run = Run()
    faults, events = build_schedule(seconds)
    try:
        await wait_serving(sidecar)
        for fake in fakes.values():  # the readiness pings are not part of the run
            fake.seen.clear()
        run.rss_start = rss_mib(sidecar.process.pid)
        say(f"sidecar pid {sidecar.process.pid} serving on {sidecar.url}, RSS {run.rss_start} MiB; "
            f"{seconds:g}s of traffic at {rate:g} req/s")  # fmt: skip
        t0 = time.monotonic()
        sdk = openai.AsyncOpenAI(base_url=sidecar.url + "/v1", api_key="unused", max_retries=0,
                                 timeout=CLIENT_TIMEOUT)  # fmt: skip
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT))
        slots = asyncio.Semaphore(concurrency)
        in_flight: set[asyncio.Task[None]] = set()

        async def one(number: int) -> None:
            case = CASES[number % len(CASES)]
            stream = case.api == "chat" and (number // len(CASES)) % 2 == 1
            client = "sdk" if (number // (2 * len(CASES))) % 2 == 0 else "raw"
            sent = Sent(number, f"chaos-{number:06d}", case.label, case.api, case.personal, case.downgrade,
                        stream, client, time.monotonic() - t0)  # fmt: skip
            run.sent.append(sent)
            mark = f"chaos-mark:{number}:{'eu' if case.personal else 'pub'}"
            headers = {"x-request-id": sent.request_id, **dict(case.headers)}
            body = build_body(case, mark, stream)
            try:
                async with asyncio.timeout(CLIENT_TIMEOUT + 2):
                    if client == "sdk":
                        await send_sdk(sdk, sent, body, headers)
                    else:
                        await send_raw(session, sidecar.url, sent, body, headers)
            except TimeoutError:
                sent.outcome = "timeout"
            finally:
                sent.ended = time.monotonic() - t0
                slots.release()

        async def control() -> None:
            nonlocal live
            begun: set[tuple[int, str]] = set()
            ended: set[tuple[int, str]] = set()
            pending = sorted(events, key=lambda e: e.at)
            step = 0
            while (now := time.monotonic() - t0) < seconds:
                for index, fault in enumerate(faults):
                    for region in fault.regions:
                        fake, key = fakes[region], (index, region)
                        if fault.start <= now < fault.end and key not in begun:
                            begun.add(key)
                            if fault.mode == "kill":
                                await fake.kill()
                            else:
                                fake.mode = fault.mode
                            say(f"  {now:6.1f}s {region}: {fault.mode}")
                        elif now >= fault.end and key in begun and key not in ended:
                            ended.add(key)
                            if fault.mode == "kill":
                                await fake.start()
                            if fault.mode == "hung":
                                for conn in list(fake.connections):
                                    conn.abort()  # the hung connections end with the fault
                            fake.mode = "normal"
                            say(f"  {now:6.1f}s {region}: normal")
                while pending and pending[0].at <= now:
                    event = pending.pop(0)
                    if event.action == "kill-worker":
                        workers = children(sidecar.process.pid)
                        if workers:
                            os.kill(workers[0], signal.SIGKILL)
                            run.kills.append(now)
                            say(f"  {now:6.1f}s SIGKILL worker pid {workers[0]}")
                    else:
                        if event.action == "push-changed":
                            step += 1
                            live = compile_config(changed_docs(docs, step), workdir, next(sequence))
                        status = await push(sidecar, live)
                        run.pushes.append((now, event.action, status))
                        say(f"  {now:6.1f}s {event.action}: {status}")
                await asyncio.sleep(0.05)

        controller = asyncio.create_task(control())
        number = 0
        interval = 1.0 / rate
        limit = int(seconds * rate) + 1  # bounded in count as well as in time
        while number < limit and time.monotonic() - t0 < seconds:
            await slots.acquire()
            task = asyncio.create_task(one(number))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            number += 1
            next_at = t0 + number * interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLIENT_TIMEOUT + 5):
                await asyncio.gather(*in_flight, return_exceptions=True)
        controller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await controller
        for fake in fakes.values():
            fake.mode = "normal"
        run.rss_end = rss_mib(sidecar.process.pid)
        await session.close()
        await sdk.close()
    finally:
        sidecar.stop()  # SIGTERM: the workers flush their audit lines
        for fake in fakes.values():
            await fake.kill()
    audit = []
    if sidecar.audit.exists():
        for line in sidecar.audit.read_text().splitlines():
            with contextlib.suppress(ValueError):
                audit.append(json.loads(line))
    return run, fakes, faults, audit


def analyse(run: Run, fakes: dict[str, RecordingUpstream], faults: list[Fault], audit: list[dict[str, Any]],
            t0_offset: float) -> dict[str, Any]:  # fmt: skip
    """The figures; see the module docstring for what each counts and leaves out."""
    by_id = {s.request_id: s for s in run.sent}
    seen = [r for fake in fakes.values() for r in fake.seen]
    cut_by_fake = set().union(*(fake.cut for fake in fakes.values()))

    mismatched = [r for r in seen if r.request_id in by_id and r.mark != by_id[r.request_id].number]
    violations = [r for r in seen if r.region == "us-east-1" and r.mark_eu
                  and r.request_id in by_id and by_id[r.request_id].personal]  # fmt: skip

    attempts: dict[str, Counter[tuple[str, str]]] = {}
    for line in audit:
        rid = line.get("requestId", "")
        if rid in by_id:
            attempts[rid] = Counter((a["endpoint"], a["replica"]) for a in line.get("attempts", ()))
    posts: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for r in seen:
        posts[r.request_id][(r.endpoint, r.region)] += 1
    duplicates: list[dict[str, Any]] = []
    unaudited = 0
    for rid, counts in posts.items():
        if rid not in by_id:
            continue
        if rid not in attempts:
            unaudited += 1
            continue
        for where, count in counts.items():
            extra = count - attempts[rid][where]
            if extra > 0:
                conns = sorted(
                    {r.connection for r in seen if r.request_id == rid and (r.endpoint, r.region) == where}
                )
                duplicates.append({"requestId": rid, "at": list(where), "posts": count,
                                   "attempts": attempts[rid][where], "connections": conns})  # fmt: skip

    def kill_affected(s: Sent) -> bool:
        if s.outcome not in ("transport", "stream-cut", "timeout"):
            return False
        return any(s.started <= k <= s.ended or k <= s.started <= k + KILL_GRACE for k in run.kills)

    errors_up: list[Sent] = []
    cuts: list[Sent] = []
    killed: list[Sent] = []
    refused_downgrades = 0
    for s in run.sent:
        if s.outcome == "ok":
            continue
        if kill_affected(s):
            killed.append(s)
            continue
        if s.outcome == "stream-cut":
            cuts.append(s)
        if s.downgrade and s.status == 400:
            refused_downgrades += 1
            continue
        if s.request_id in cut_by_fake:
            continue  # the upstream broke it after the first byte: unavoidable (a missing error event
            # is counted in streams_cut_without_error, not here)
        allowed = EU_REGIONS if s.personal else frozenset(REGIONS)
        if any(up_throughout(faults, region, s.started, s.ended) for region in allowed):
            errors_up.append(s)

    def breakdown(items: list[Sent]) -> dict[str, int]:
        return dict(
            Counter(f"{s.label}/{s.outcome}{'/' + s.code if s.code else ''}" for s in items).most_common()
        )

    leaks = Counter(by_id[r.request_id].label for r in violations)
    return {
        "residency_violations": len(violations),
        "client_errors_while_compliant_up": len(errors_up),
        "duplicate_posts": len(duplicates),
        "streams_cut_without_error": len(cuts),
        "requests_sent": len(run.sent),
        "requests_ok": sum(s.outcome == "ok" for s in run.sent),
        "rss_mib_start": run.rss_start,
        "rss_mib_end": run.rss_end,
        "posts_seen": len(seen),
        "posts_by_region": dict(Counter(r.region for r in seen)),
        "eu_requests_failed_closed": sum(1 for s in run.sent if s.personal and s.status >= 500),
        "refused_downgrades": refused_downgrades,
        "kill_affected": len(killed),
        "unaudited_requests": unaudited,
        "marker_mismatches": len(mismatched),
        "pushes": [list(p) for p in run.pushes],
        "worker_kills": len(run.kills),
        "violations_by_case": dict(leaks.most_common()),
        "errors_by_case": breakdown(errors_up),
        "cuts_by_case": breakdown(cuts),
        "duplicates_sample": duplicates[:5],
        "outcomes": dict(Counter(s.outcome for s in run.sent)),
    }


MUST_BE_ZERO = ("residency_violations", "client_errors_while_compliant_up", "duplicate_posts",
                "streams_cut_without_error")  # fmt: skip


def run_chaos(seconds: float, rate: float, concurrency: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the whole thing; return the figures."""
    with tempfile.TemporaryDirectory(prefix="modelroute-chaos-") as tmp:
        run, fakes, faults, audit = asyncio.run(drive(seconds, rate, concurrency, Path(tmp), say))
        return analyse(run, fakes, faults, audit, 0.0)


def report(figures: dict[str, Any]) -> Iterator[str]:
    yield "chaos figures"
    for key in (*MUST_BE_ZERO, "requests_sent", "requests_ok", "rss_mib_start", "rss_mib_end"):
        mark = "  (must be 0)" if key in MUST_BE_ZERO else ""
        yield f"  {key:<34} {figures[key]}{mark}"
    for key in ("posts_by_region", "eu_requests_failed_closed", "refused_downgrades", "kill_affected",
                "unaudited_requests", "marker_mismatches", "pushes", "outcomes", "violations_by_case",
                "errors_by_case", "cuts_by_case", "duplicates_sample"):  # fmt: skip
        yield f"  {key:<34} {json.dumps(figures[key], ensure_ascii=False)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=180.0, help="traffic duration (default 180)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests started per second (default 20)")
    parser.add_argument("--concurrency", type=int, default=12, help="requests in flight at most (default 12)")
    parser.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    args = parser.parse_args()
    if not 5 <= args.seconds <= 900:
        parser.error("--seconds must be between 5 and 900")
    figures = run_chaos(args.seconds, args.rate, args.concurrency, lambda line: print(line, flush=True))
    for line in report(figures):
        print(line)
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, sort_keys=True))
    return 0 if all(figures[k] == 0 for k in MUST_BE_ZERO) else 1


if __name__ == "__main__":
    sys.exit(main())

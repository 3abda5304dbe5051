"""Fixtures of the sidecar component tests: fake upstreams, a RouterConfig built around them, and the
sidecar serving on 127.0.0.1 (in-process for speed, or as real processes where a test needs them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from modelroute_contract import RouterConfig
from modelroute_sidecar.admin import LocalFleet, admin_server
from modelroute_sidecar.app import build_sidecar, data_plane
from modelroute_sidecar.server import DataServer
from modelroute_sidecar.settings import Settings
from modelroute_sidecar.state import Sidecar
from tests.fakes.upstream import FakeUpstream
from tests.ports import free_port  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
UPSTREAM_KEY = "sk-upstream-secret"

FAKE_NAMES = ("eu-1", "eu-2", "us-1", "stable", "candidate", "small", "big")


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within: float = 10.0, what: str = ""
) -> None:
    """Poll `check` until it holds or the deadline passes (no fixed sleeps in tests)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


def build_config(urls: dict[str, str], *, namespace: str = "team-a", **policy_changes: Any) -> RouterConfig:
    """A RouterConfig around the fakes: `llama` in eu-west, eu-central and us-east; a canary between
    `stable` and `candidate`; a cascade from `small` to `big`; an EU residency class."""

    def replica(name: str, region: str, compliance: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "region": region,
            "url": urls[name],
            "compliance": compliance,
            "health": "Healthy",
        }

    endpoints = [
        {
            "name": "big",
            "model": "big-70b",
            "tier": "expert",
            "capabilities": {"jsonMode": True},
            "pricing": {"inputPerMillion": 3.0, "outputPerMillion": 15.0},
            "replicas": [replica("big", "eu-west", ["gdpr"])],
        },
        {"name": "candidate", "model": "cand-v2", "replicas": [replica("candidate", "eu-west", ["gdpr"])]},
        {
            "name": "llama",
            "model": "llama-3-70b-instruct",
            "credentials": {"secret": "llama-key", "key": "apiKey"},
            "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
            "replicas": [
                replica("eu-1", "eu-west", ["gdpr"]),
                replica("eu-2", "eu-central", ["gdpr"]),
                replica("us-1", "us-east", []),
            ],
        },
        {
            "name": "small",
            "model": "small-8b",
            "tier": "fast",
            "capabilities": {"jsonMode": True},
            "replicas": [replica("small", "eu-west", ["gdpr"])],
        },
        {"name": "stable", "model": "stable-v1", "replicas": [replica("stable", "eu-west", ["gdpr"])]},
    ]
    policy: dict[str, Any] = {
        "name": "main",
        "virtualModels": ["auto", "cascade", "split"],
        "rules": [
            {
                "name": "canary",
                "match": {"models": ["split"]},
                "targets": [{"endpoint": "stable", "weight": 100}],
                "canary": {
                    "name": "cand-rollout",
                    "stable": "stable",
                    "candidate": "candidate",
                    "candidateWeight": 20.0,
                    "stickinessHeader": "x-user",
                },
            },
            {
                "name": "cascade",
                "match": {"models": ["cascade"]},
                "targets": [{"endpoint": "small", "weight": 100}],
                "escalation": ["big"],
            },
            {"name": "default", "targets": [{"endpoint": "llama", "weight": 100}]},
        ],
        "residency": {
            "dataClasses": [
                {
                    "name": "eu-personal",
                    "allowedRegions": ["eu-central", "eu-west"],
                    "requiredCompliance": ["gdpr"],
                }
            ],
            "header": "x-modelroute-data-class",
        },
        "locality": {"preferLocal": True, "failoverOrder": ["eu-central", "us-east"]},
        "resilience": {
            "maxAttempts": 3,
            "perTryTimeoutSeconds": 2.0,
            "deadlineSeconds": 5.0,
            "ejectAfterFailures": 3,
            "baseEjectionSeconds": 30.0,
            "escalateOn": ["error", "timeout", "length", "invalidJson"],
        },
        "tenantLimits": [{"tenantTier": "free", "requestsPerMinute": 2}],
    }
    for key, value in policy_changes.items():
        policy[key] = {**policy[key], **value} if isinstance(policy.get(key), dict) else value
    data = {"namespace": namespace, "endpoints": endpoints, "policies": [policy]}
    return RouterConfig.model_validate(data).seal()


@pytest.fixture(scope="session")
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    """One in-process fake per replica name, shared by the session (reset before each test)."""
    started = {name: await FakeUpstream(name).start() for name in FAKE_NAMES}
    yield started
    for fake in started.values():
        await fake.stop()


@pytest.fixture
async def upstreams(fakes: dict[str, FakeUpstream]) -> dict[str, FakeUpstream]:
    """The session's fakes, answering normally and with no recorded requests; restarted if a test killed one."""
    for fake in fakes.values():
        if fake._runner is None:
            await fake.start(fake.port)
        fake.reset()
    return fakes


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A mounted-Secret layout holding the upstream key of `llama`."""
    key = tmp_path / "secrets" / "llama-key" / "apiKey"
    key.parent.mkdir(parents=True)
    key.write_text(UPSTREAM_KEY + "\n")
    return tmp_path / "secrets"


def sdk_client(url: str, **kwargs: Any) -> openai.AsyncOpenAI:
    """The official SDK pointed at a sidecar's base URL, SDK retries off so tests see every answer.
    Close it when done (`Running.stop` says why)."""
    kwargs.setdefault("api_key", "unused")
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=url + "/v1", **kwargs)


@pytest.fixture
async def sdk_clients() -> AsyncIterator[Callable[[str], openai.AsyncOpenAI]]:
    """Makes SDK clients for a URL and closes them after the test."""
    made: list[openai.AsyncOpenAI] = []

    def make(url: str) -> openai.AsyncOpenAI:
        made.append(sdk_client(url))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@dataclasses.dataclass
class Running:
    """A sidecar serving in-process."""

    sidecar: Sidecar
    url: str
    admin_url: str
    server: DataServer
    serving: contextlib.AsyncExitStack
    """Stops the admin port, then the data plane."""
    clients: list[openai.AsyncOpenAI] = dataclasses.field(default_factory=list)

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An official SDK client pointed at the sidecar (SDK retries off: tests see every answer);
        closed when the sidecar stops."""
        client = sdk_client(self.url, **kwargs)
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        """Close the SDK clients, then the sidecar.

        Clients must be closed, not left to the garbage collector: the SDK's `__del__` schedules an
        `aclose()` task, but by then the collector has already closed the sockets behind their asyncio
        transports, so the late `abort()` unregisters from the event loop whatever connection has
        reused the file descriptor since. That connection then never sees its answer (a test hung
        for 300 s on exactly this).
        """
        for client in self.clients:
            await client.close()
        await self.serving.aclose()

    async def admin(
        self, method: str, path: str, body: bytes | None = None, token: str | None = ADMIN_TOKEN
    ) -> tuple[int, Any]:
        """Call the admin port."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.admin_url + path, data=body, headers=headers) as response,
        ):
            return response.status, await response.json(content_type=None)


SidecarFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_sidecar(
    upstreams: dict[str, FakeUpstream], secrets_dir: Path, tmp_path: Path
) -> AsyncIterator[SidecarFactory]:
    """Start an in-process sidecar (data + admin app) with a config around the fakes."""
    running: list[Running] = []

    async def start(config: RouterConfig | None = None, **settings_changes: Any) -> Running:
        if config is None:
            config = build_config({n: f.url for n, f in upstreams.items()})
        config_file = tmp_path / "config" / "routerConfig.json"
        config_file.parent.mkdir(exist_ok=True)
        config_file.write_text(config.to_json())
        values: dict[str, Any] = {
            "port": 0,
            "admin_port": 0,
            "admin_token": ADMIN_TOKEN,
            "config_file": config_file,
            "config_poll_seconds": 0.1,
            "region": "eu-west",
            "pod_name": "app-0",
            "secrets_dir": secrets_dir,
            "audit_log": str(tmp_path / "audit.jsonl"),
        }
        values.update(settings_changes)
        settings = Settings(**values)
        sidecar = build_sidecar(settings)
        serving = contextlib.AsyncExitStack()
        server = await serving.enter_async_context(data_plane(sidecar, "127.0.0.1", 0))
        admin = admin_server(LocalFleet(sidecar), ADMIN_TOKEN)
        await admin.start("127.0.0.1", 0)
        serving.push_async_callback(admin.close, 1.0)
        admin_url = f"http://127.0.0.1:{admin.port}"
        handle = Running(sidecar, f"http://127.0.0.1:{server.port}", admin_url, server, serving)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.stop()


@pytest.fixture
async def sidecar(start_sidecar: SidecarFactory) -> Running:
    """A sidecar with the default test config."""
    return await start_sidecar()


# --- real processes ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Process:
    """A child process with its port."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        """Terminate (then kill) the process."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


async def wait_http(url: str, within: float = 20.0, status: int = 200) -> None:
    """Poll `url` until it answers `status`."""

    async def ok() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return response.status == status
        except aiohttp.ClientError:
            return False

    await eventually(ok, within, f"{url} to answer {status}")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start processes from the repository root; all are stopped at the end of the test."""
    processes: list[Process] = []

    def start(args: list[str], port: int, name: str, env: dict[str, str] | None = None) -> Process:
        log = tmp_path / f"{name}.log"
        environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=environ
            )
        process = Process(popen, port, log)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


def dump_json(value: Any) -> bytes:
    """JSON bytes of a value."""
    return json.dumps(value).encode()

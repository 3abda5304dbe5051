"""The sidecar as it runs in a pod: the `modelroute-sidecar` binary with two SO_REUSEPORT workers, fake
upstreams as separate processes, clients on the official SDK. Kill upstream processes under load,
push configs to the admin port, read metrics and stats summed over the workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai
import pytest

from modelroute_sidecar.ratelimit import TENANT_TABLE_FILE
from tests.component.conftest import (
    ADMIN_TOKEN,
    Process,
    build_config,
    eventually,
    free_port,
    wait_http,
)

pytestmark = pytest.mark.e2e

EU_PERSONAL = {"x-modelroute-data-class": "eu-personal"}
HI = [{"role": "user", "content": "hi"}]


async def fake_requests(port: int) -> list[dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/_fake/requests") as r,
    ):
        result: list[dict[str, object]] = await r.json()
        return result


async def admin(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_two_workers_survive_upstream_deaths_and_follow_pushes(
    spawn: Callable[..., Process], sdk_clients: Callable[[str], openai.AsyncOpenAI], tmp_path: Path
) -> None:
    fakes = {name: free_port() for name in ("eu-1", "eu-2", "us-1")}
    procs = {
        name: spawn(["-m", "tests.fakes.upstream", "--port", str(port), "--name", name], port, name)
        for name, port in fakes.items()
    }
    urls = {name: f"http://127.0.0.1:{port}/v1" for name, port in fakes.items()}
    unused = "http://127.0.0.1:9/v1"  # endpoints this test never routes to
    urls.update({name: unused for name in ("stable", "candidate", "small", "big")})
    config = build_config(urls, resilience={"baseEjectionSeconds": 30.0, "perTryTimeoutSeconds": 2.0})
    config_file = tmp_path / "routerConfig.json"
    config_file.write_text(config.to_json())
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    secrets = tmp_path / "secrets" / "llama-key"
    secrets.mkdir(parents=True)
    (secrets / "apiKey").write_text("sk-test")
    port, admin_port = free_port(), free_port()
    sidecar = spawn(
        [
            "-m", "modelroute_sidecar.main", "--port", str(port), "--admin-port", str(admin_port),
            "--admin-host", "127.0.0.1", "--admin-token-file", str(token_file), "--config-file", str(config_file),
            "--config-poll-seconds", "0.2", "--region", "eu-west", "--secrets-dir", str(tmp_path / "secrets"),
            "--workers", "2", "--audit-log", str(tmp_path / "audit.jsonl"), "--pod-name", "app-0",
        ],
        port,
        "sidecar",
    )  # fmt: skip
    for fake_port in fakes.values():
        await wait_http(f"http://127.0.0.1:{fake_port}/v1/models")
    await wait_http(f"http://127.0.0.1:{port}/readyz")
    await wait_http(f"http://127.0.0.1:{admin_port}/healthz")
    assert sidecar.popen.poll() is None

    client = sdk_clients(f"http://127.0.0.1:{port}")
    served: dict[str, int] = {}
    failures: list[BaseException] = []
    done = 0
    total = 800
    killed = asyncio.Event()

    async def load(worker: int) -> None:
        nonlocal done
        while done < total:
            done += 1
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="auto", messages=HI, extra_headers=EU_PERSONAL
                )
                replica = raw.headers["x-modelroute-replica"]
                served[replica] = served.get(replica, 0) + 1
            except openai.APIError as exc:
                failures.append(exc)
            if done == total // 4 and not killed.is_set():
                procs["eu-1"].popen.kill()  # the local replica dies mid-load
                killed.set()

    await asyncio.gather(*(load(i) for i in range(16)))
    assert killed.is_set()
    assert failures == [], failures[:3]
    assert served["eu-1"] > 0 and served["eu-2"] > total // 2, served
    assert "us-1" not in served

    # every worker counted into one exposition: the sum is every request made
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    assert metric_sum(text, "modelroute_requests_total") == total
    status, stats = await admin(admin_port, "GET", "/stats")
    assert status == 200 and stats["workers"] == 2
    llama = stats["endpoints"]["llama"]  # type: ignore[index]
    assert llama["replicas"]["eu-1"]["errors"] >= 1  # type: ignore[index]

    # a push reaches both workers; a bad one is refused and both keep the old version
    new = build_config(urls, virtualModels=["auto", "cascade", "extra", "split"])
    status, answer = await admin(admin_port, "PUT", "/config", new.to_json().encode())
    assert (status, answer["version"], answer["workers"]) == (200, new.version, 2)
    status, version = await admin(admin_port, "GET", "/config/version")
    assert version["workerVersions"] == [new.version, new.version]
    tampered = {**json.loads(new.to_json()), "namespace": "other"}
    status, answer = await admin(admin_port, "PUT", "/config", json.dumps(tampered).encode())
    assert status == 422
    status, version = await admin(admin_port, "GET", "/config/version")
    assert version["workerVersions"] == [new.version, new.version]
    models = await client.models.list()
    assert "extra" in [m.id for m in models.data]

    # the last compliant replica dies: fail closed with the residency reason, never a US upstream
    procs["eu-2"].popen.kill()
    statuses = []
    for _ in range(8):
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="auto", messages=HI, extra_headers=EU_PERSONAL)
        statuses.append(caught.value.status_code)
        assert "residency" in caught.value.response.json()["error"]["message"]
    assert set(statuses) == {503}
    assert await fake_requests(fakes["us-1"]) == []
    public = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert public.headers["x-modelroute-replica"] == "us-1"

    # the config file is watched by the parent and reaches the workers too
    third = build_config(urls, virtualModels=["auto", "cascade", "split", "third"])
    staged = config_file.with_suffix(".new")
    staged.write_text(third.to_json())
    staged.replace(config_file)

    async def applied() -> bool:
        _, version = await admin(admin_port, "GET", "/config/version")
        return version["workerVersions"] == [third.version, third.version]

    await eventually(applied, within=15, what="file change on both workers")


def worker_pids(parent: int) -> dict[int, int]:
    """Worker index -> pid of a sidecar parent's workers (its forked children, named by index)."""
    workers = {}
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        workers[int(name.removeprefix("modelroute-w"))] = int(pid)
    return workers


async def test_a_killed_worker_is_restarted_with_backoff_while_the_admin_port_keeps_answering(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    fake_port = free_port()
    spawn(["-m", "tests.fakes.upstream", "--port", str(fake_port), "--name", "eu-1"], fake_port, "eu-1")
    urls = {name: f"http://127.0.0.1:{fake_port}/v1" for name in ("eu-1", "eu-2", "us-1")}
    urls.update({name: "http://127.0.0.1:9/v1" for name in ("stable", "candidate", "small", "big")})
    config = build_config(urls)
    config_file = tmp_path / "routerConfig.json"
    config_file.write_text(config.to_json())
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    port, admin_port = free_port(), free_port()
    sidecar = spawn(
        [
            "-m", "modelroute_sidecar.main", "--port", str(port), "--admin-port", str(admin_port),
            "--admin-host", "127.0.0.1", "--admin-token-file", str(token_file), "--config-file", str(config_file),
            "--region", "eu-west", "--workers", "2", "--audit-log", str(tmp_path / "audit.jsonl"),
        ],
        port,
        "sidecar",
    )  # fmt: skip
    await wait_http(f"http://127.0.0.1:{port}/readyz")
    await wait_http(f"http://127.0.0.1:{admin_port}/healthz")
    new = build_config(urls, virtualModels=["auto", "cascade", "extra", "split"])
    status, _ = await admin(admin_port, "PUT", "/config", new.to_json().encode())
    assert status == 200

    reads: list[tuple[int, dict[str, object]]] = []

    async def read_version() -> tuple[int, dict[str, object]]:
        answer = await admin(admin_port, "GET", "/config/version")
        reads.append(answer)
        return answer

    for kill in (1, 2):  # the second death in a row waits twice as long
        victims = worker_pids(sidecar.popen.pid)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)  # the same worker twice: deaths in a row back off

        async def seen_down() -> bool:
            _, body = await read_version()
            return body["workersDown"] != []

        await eventually(seen_down, within=5, what="the dead worker reported down")
        _, down = reads[-1]
        assert down["version"] == new.version, down  # answered from the worker that is up
        assert len(down["workersDown"]) == 1  # type: ignore[arg-type]
        status, stats = await admin(admin_port, "GET", "/stats")  # sums what answers, no 500
        assert status == 200, stats

        async def back() -> bool:
            _, body = await read_version()
            return body["workersDown"] == [] and body["workerVersions"] == [new.version, new.version]

        await eventually(back, within=15, what=f"worker restarted (kill {kill}) with the pushed config")
        assert {status for status, _ in reads} == {200}, [r for r in reads if r[0] != 200][:2]
        assert worker_pids(sidecar.popen.pid)[0] != victims[0]

    log = sidecar.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    deaths = [line for line in log.splitlines() if "killed by SIGKILL" in line]
    assert len(deaths) == 2, log[-3000:]
    assert "restarting it in 0.5 s (death 1 in a row)" in deaths[0], deaths
    assert "restarting it in 1.0 s (death 2 in a row)" in deaths[1], deaths


async def test_two_workers_hold_one_tenant_limit_between_them(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    fake_port = free_port()
    spawn(["-m", "tests.fakes.upstream", "--port", str(fake_port), "--name", "eu-1"], fake_port, "eu-1")
    urls = {name: f"http://127.0.0.1:{fake_port}/v1" for name in ("eu-1", "eu-2", "us-1")}
    urls.update({name: "http://127.0.0.1:9/v1" for name in ("stable", "candidate", "small", "big")})
    per_minute = 30
    config = build_config(urls, tenantLimits=[{"requestsPerMinute": per_minute}])
    config_file = tmp_path / "routerConfig.json"
    config_file.write_text(config.to_json())
    secrets = tmp_path / "secrets" / "llama-key"
    secrets.mkdir(parents=True)
    (secrets / "apiKey").write_text("sk-test")
    port = free_port()
    sidecar = spawn(
        [
            "-m", "modelroute_sidecar.main", "--port", str(port), "--config-file", str(config_file),
            "--region", "eu-west", "--workers", "2", "--audit-log", str(tmp_path / "audit.jsonl"),
            "--secrets-dir", str(tmp_path / "secrets"),
        ],
        port,
        "sidecar",
    )  # fmt: skip
    await wait_http(f"http://127.0.0.1:{fake_port}/v1/models")
    await wait_http(f"http://127.0.0.1:{port}/readyz")

    statuses: list[int] = []
    failures: list[bytes] = []
    body = json.dumps({"model": "auto", "messages": HI}).encode()
    headers = {"content-type": "application/json", "x-modelroute-tenant": "acme"}
    # a new connection per request, so the kernel spreads them over both SO_REUSEPORT workers
    connector = aiohttp.TCPConnector(force_close=True)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for _ in range(25):
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                async with session.post(url, data=body, headers=headers) as response:
                    statuses.append(response.status)
                    answer = await response.read()
                    if response.status not in (200, 429):
                        failures.append(answer[:300])

        await asyncio.gather(*(client() for _ in range(8)))
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, failures[:3]
    # the burst is one minute of quota; refill adds per_minute/60 each second of the test
    assert per_minute <= admitted <= per_minute + int(elapsed * per_minute / 60) + 1, (admitted, elapsed)

    # both workers served: the limit held across processes, not inside one
    control_dir = Path(sidecar_control_dir(sidecar.popen.pid))
    for index in (0, 1):
        connector_unix = aiohttp.UnixConnector(path=str(control_dir / f"worker-{index}.sock"))
        async with (
            aiohttp.ClientSession(connector=connector_unix) as session,
            session.get("http://worker/control/metrics") as response,
        ):
            assert metric_sum(await response.text(), "modelroute_requests_total") > 0, index


def sidecar_control_dir(parent: int) -> str:
    """The private directory of a parent and its workers: where the workers map the shared tenant table."""
    pid = next(iter(worker_pids(parent).values()))
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("/" + TENANT_TABLE_FILE):
            return str(Path(line.split(maxsplit=5)[5]).parent)
    raise AssertionError(f"worker {pid} maps no tenant table")


async def test_feedback_reaches_the_worker_that_served_from_any_connection(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    fake_port = free_port()
    spawn(["-m", "tests.fakes.upstream", "--port", str(fake_port), "--name", "eu-1"], fake_port, "eu-1")
    urls = {name: f"http://127.0.0.1:{fake_port}/v1" for name in ("eu-1", "eu-2", "us-1")}
    urls.update({name: "http://127.0.0.1:9/v1" for name in ("stable", "candidate", "small", "big")})
    config_file = tmp_path / "routerConfig.json"
    config_file.write_text(build_config(urls).to_json())
    secrets = tmp_path / "secrets" / "llama-key"
    secrets.mkdir(parents=True)
    (secrets / "apiKey").write_text("sk-test")
    keys = tmp_path / "client-keys.yaml"
    keys.write_text("sk-a:\n  tenant: acme\nsk-b:\n  tenant: globex\n")
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    port, admin_port = free_port(), free_port()
    sidecar = spawn(
        [
            "-m", "modelroute_sidecar.main", "--port", str(port), "--config-file", str(config_file),
            "--region", "eu-west", "--workers", "2", "--audit-log", str(tmp_path / "audit.jsonl"),
            "--secrets-dir", str(tmp_path / "secrets"), "--client-keys-file", str(keys),
            "--admin-port", str(admin_port), "--admin-host", "127.0.0.1", "--admin-token-file", str(token_file),
        ],
        port,
        "sidecar",
    )  # fmt: skip
    await wait_http(f"http://127.0.0.1:{fake_port}/v1/models")
    await wait_http(f"http://127.0.0.1:{port}/readyz")
    await wait_http(f"http://127.0.0.1:{admin_port}/healthz")

    ids = [f"req-{i}" for i in range(40)]
    # a new connection per request, so the kernel spreads requests and feedback over both workers
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(path: str, body: dict[str, object], key: str, request_id: str = "") -> int:
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            if request_id:
                headers["x-request-id"] = request_id
            url = f"http://127.0.0.1:{port}{path}"
            async with session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
                await response.read()
                return response.status

        chat = {"model": "auto", "messages": HI}
        for request_id in ids:
            assert await post("/v1/chat/completions", chat, "sk-a", request_id) == 200

        async def scores(key: str) -> list[int]:
            return [
                await post("/v1/feedback", {"request_id": request_id, "score": 0.5}, key)
                for request_id in ids
            ]

        assert await scores("sk-b") == [404] * len(ids)  # another tenant's ids read as unknown, on any worker
        assert await scores("sk-a") == [200] * len(ids)  # each accepted, wherever it arrived
        assert await scores("sk-a") == [404] * len(ids)  # and only once

    status, stats = await admin(admin_port, "GET", "/stats")
    assert status == 200 and stats["workers"] == 2
    [figures] = stats["feedback"]  # type: ignore[misc]
    assert (figures["count"], figures["scoreSum"]) == (len(ids), 0.5 * len(ids))  # type: ignore[index]
    # both workers served requests and took feedback: claims crossed between them
    control_dir = Path(sidecar_control_dir(sidecar.popen.pid))
    for index in (0, 1):
        connector_unix = aiohttp.UnixConnector(path=str(control_dir / f"worker-{index}.sock"))
        async with (
            aiohttp.ClientSession(connector=connector_unix) as session,
            session.get("http://worker/control/metrics") as response,
        ):
            text = await response.text()
        assert metric_sum(text, "modelroute_requests_total") > 0, index
        assert metric_sum(text, "modelroute_feedback_score_count") > 0, index

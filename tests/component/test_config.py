"""Config on the admin port: authenticated pushes swap the config; bad pushes are refused with a clear
4xx and the last known good keeps serving; the mounted file is watched for changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import aiohttp

from modelroute_contract import SCHEMA_VERSION, RouterConfig
from tests.component.conftest import (
    ADMIN_TOKEN,
    Running,
    SidecarFactory,
    build_config,
    eventually,
    free_port,
)
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


def second_config(upstreams: dict[str, FakeUpstream]) -> RouterConfig:
    """The test config with one more virtual model (a different version)."""
    return build_config(
        {n: f.url for n, f in upstreams.items()}, virtualModels=["auto", "cascade", "extra", "split"]
    )


async def test_push_applies_a_new_version(sidecar: Running, upstreams: dict[str, FakeUpstream]) -> None:
    new = second_config(upstreams)
    status, body = await sidecar.admin("PUT", "/config", new.to_json().encode())
    assert (status, body["version"], body["changed"]) == (200, new.version, True)
    status, body = await sidecar.admin("GET", "/config/version")
    assert (status, body["version"], body["source"]) == (200, new.version, "push")
    models = await sidecar.client().models.list()
    assert "extra" in [m.id for m in models.data]
    status, body = await sidecar.admin("POST", "/config", new.to_json().encode())  # same again: no change
    assert (status, body["changed"]) == (200, False)


async def test_bad_pushes_are_refused_and_the_old_version_keeps_serving(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    old = sidecar.sidecar.config.version
    good = second_config(upstreams)
    document = json.loads(good.to_json())
    tampered = {**document, "namespace": "someone-else"}  # content changed, version not recomputed
    cases = [
        (b"{nope", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({**document, "schemaVersion": SCHEMA_VERSION + 1}).encode(), 409, "schemaVersion"),
        (json.dumps({**document, "endpoints": "many"}).encode(), 422, "endpoints"),
        (json.dumps({**document, "bogus": 1}).encode(), 422, "bogus"),
        (json.dumps(tampered).encode(), 422, "does not match content hash"),
    ]
    for body, expected, words in cases:
        status, answer = await sidecar.admin("PUT", "/config", body)
        assert status == expected, (body[:60], answer)
        assert words in answer["error"]["message"], answer
        assert answer["error"]["code"] == "config_rejected"
    status, answer = await sidecar.admin("PUT", "/config", good.to_json().encode(), token=None)
    assert status == 401
    status, answer = await sidecar.admin("PUT", "/config", good.to_json().encode(), token="wrong")
    assert status == 401
    status, answer = await sidecar.admin("GET", "/config/version")
    assert answer["version"] == old
    assert "content hash" in answer["lastError"]
    completion = await sidecar.client().chat.completions.create(model="auto", messages=HI)
    assert completion.choices[0].message.content == "Hello from eu-1"


async def test_config_file_changes_are_applied(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    config_file = tmp_path / "config" / "routerConfig.json"
    broken = config_file.with_suffix(".tmp")
    broken.write_text("{broken")
    broken.replace(config_file)  # the kubelet swaps files atomically too
    new = second_config(upstreams)
    before = sidecar.sidecar.config.version
    await eventually(
        lambda: "not valid JSON" in sidecar.sidecar.config.last_error, what="broken file noticed"
    )
    assert sidecar.sidecar.config.version == before
    staged = config_file.with_suffix(".new")
    staged.write_text(new.to_json())
    staged.replace(config_file)
    await eventually(lambda: sidecar.sidecar.config.version == new.version, what="file change applied")


async def test_readyz_and_metrics_report_the_applied_version(sidecar: Running) -> None:
    version = sidecar.sidecar.config.version
    async with aiohttp.ClientSession() as session:
        async with session.get(sidecar.url + "/readyz") as response:
            assert (response.status, (await response.json())["configVersion"]) == (200, version)
        async with session.get(
            sidecar.admin_url + "/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as response:
            assert (
                f'modelroute_config_info{{schema="{SCHEMA_VERSION}",version="{version}"}} 1.0'
                in await response.text()
            )


async def test_a_push_pointing_a_replica_at_the_sidecars_own_ports_is_refused(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    """The sidecar checks pushed configs against the ports it was started with, not only the defaults."""
    admin_port = free_port()
    sidecar = await start_sidecar(admin_port=admin_port)
    old = sidecar.sidecar.config.version
    urls = {n: f.url for n, f in upstreams.items()}
    cases = [
        (f"http://127.0.0.1:{admin_port}/v1", f"own port {admin_port}"),
        ("http://169.254.169.254/latest", "cloud-metadata"),
        ("http://[::ffff:a9fe:a9fe]/v1", "cloud-metadata"),
        ("http://key:secret@eu.example/v1", "user-info"),
    ]
    document = json.loads(build_config(urls).to_json())
    for url, words in cases:
        # Sealed correctly, as a pusher holding the admin token would: only the rule can refuse it.
        document["endpoints"][0]["replicas"][0]["url"] = url
        body = {k: v for k, v in document.items() if k != "version"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["version"] = "sha256:" + hashlib.sha256(canonical).hexdigest()[:16]
        status, answer = await sidecar.admin("PUT", "/config", json.dumps(body).encode())
        assert status == 422 and words in answer["error"]["message"], (url, answer)
        assert "secret" not in answer["error"]["message"]
    status, answer = await sidecar.admin("GET", "/config/version")
    assert answer["version"] == old


async def test_a_push_with_an_invalid_detector_pattern_is_refused(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    """A correctly sealed push whose pattern detector is not valid RE2 gets 422 with RE2's reason; the
    same push with a valid pattern is applied and classifies by it."""
    old = sidecar.sidecar.config.version
    document = json.loads(second_config(upstreams).to_json())

    def sealed(pattern: str) -> bytes:
        detector = {"kind": "pattern", "name": "employee-id", "pattern": pattern, "dataClass": "eu-personal"}
        document["policies"][0]["residency"]["detectors"] = [detector]
        # Sealed as the contract does (an unsequenced config hashes without `sequence`).
        body = {k: v for k, v in document.items() if k != "version" and (k != "sequence" or v)}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["version"] = "sha256:" + hashlib.sha256(canonical).hexdigest()[:16]
        return json.dumps(body).encode()

    status, answer = await sidecar.admin("PUT", "/config", sealed(r"(EMP-\d{6}"))
    assert status == 422, answer
    assert "not a valid RE2 regular expression: missing )" in answer["error"]["message"], answer
    status, answer = await sidecar.admin("GET", "/config/version")
    assert answer["version"] == old
    status, answer = await sidecar.admin("PUT", "/config", sealed(r"(?i)\bemp-\d{6}\b"))
    assert (status, answer["changed"]) == (200, True), answer
    raw = await sidecar.client().chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "who is \uff25\uff2d\uff30-123456?"}],  # full-width letters
        extra_headers={"x-modelroute-data-class": "public"},
    )
    assert raw.headers["x-modelroute-data-class"] == "eu-personal"
    assert raw.headers["x-modelroute-data-class-source"].startswith("detector:pattern:employee-id")
    assert raw.headers["x-modelroute-region"].startswith("eu-")


def sequenced(config: RouterConfig, sequence: int) -> RouterConfig:
    return config.model_copy(update={"sequence": sequence}).seal()


async def test_a_push_never_turns_the_live_config_back(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    base = build_config({n: f.url for n, f in upstreams.items()})
    live = sequenced(second_config(upstreams), 5)
    status, body = await sidecar.admin("PUT", "/config", live.to_json().encode())
    assert (status, body["sequence"], body["changed"]) == (200, 5, True)

    older = sequenced(base, 4)
    status, body = await sidecar.admin("PUT", "/config", older.to_json().encode())
    assert status == 409, body
    message = body["error"]["message"]
    assert "sequence 4" in message and "sequence 5" in message, message
    assert older.version in message and live.version in message, message

    rival = sequenced(base, 5)  # same place in order, other content
    status, body = await sidecar.admin("PUT", "/config", rival.to_json().encode())
    assert status == 409 and "same as the live config" in body["error"]["message"], body

    unsequenced = base  # sequence 0: from an operator without sequences, older than every sequenced one
    status, body = await sidecar.admin("PUT", "/config", unsequenced.to_json().encode())
    assert status == 409, body

    status, body = await sidecar.admin("PUT", "/config", live.to_json().encode())  # the same again
    assert (status, body["changed"]) == (200, False)
    status, body = await sidecar.admin("GET", "/config/version")
    assert (body["version"], body["sequence"]) == (live.version, 5)

    # the bootstrap file, rewritten with an older config, does not turn it back either
    config_file = tmp_path / "config" / "routerConfig.json"
    staged = config_file.with_suffix(".new")
    staged.write_text(older.to_json())
    staged.replace(config_file)
    await eventually(lambda: "older than the live config" in sidecar.sidecar.config.last_error, what="file")
    assert sidecar.sidecar.config.version == live.version
    newer = sequenced(base, 6)
    staged.write_text(newer.to_json())
    staged.replace(config_file)
    await eventually(lambda: sidecar.sidecar.config.version == newer.version, what="newer file applied")

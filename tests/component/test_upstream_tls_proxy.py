"""The upstream client's TLS and proxies against loopback servers: a replica behind a private CA that
requires a client certificate (certificates made here with the openssl CLI), Secret rotation, bad key
material, and a tiny forward proxy written here (CONNECT tunnels for https, absolute form for http)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from modelroute_contract import CredentialRef, RouterConfig, TlsConfig
from modelroute_operator.clients.kube import SecretForbiddenError
from modelroute_operator.clients.probe import client_context, probe
from modelroute_operator.runtime.monitor import HealthMonitor
from modelroute_sidecar.httpclient import Pool, UpstreamError
from modelroute_sidecar.proxies import ProxyConfig
from modelroute_sidecar.tls import TlsContexts, TlsError
from tests.component.conftest import SidecarFactory, build_config
from tests.component.test_httpclient import read_request
from tests.fakes.upstream import FakeUpstream
from tests.rawserver import start_raw_server


@dataclass(frozen=True)
class Pki:
    """Two private CAs (one for servers, one for clients) and a certificate from each."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(dir: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=dir,
    )  # fmt: skip


def _make_leaf(dir: Path, name: str, ca: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=dir,
    )  # fmt: skip
    (dir / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=dir,
    )  # fmt: skip


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    dir = tmp_path_factory.mktemp("pki")
    for ca in ("server-ca", "client-ca", "other-ca"):
        _make_ca(dir, ca)
    _make_leaf(
        dir, "upstream.test", "server-ca",
        "subjectAltName=DNS:upstream.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )  # fmt: skip
    _make_leaf(
        dir, "modelroute-client", "client-ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    )
    return Pki(dir)


@dataclass
class TlsUpstream:
    port: int
    peers: list[str] = field(default_factory=list)
    """Common names of the client certificates presented."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"


@pytest.fixture
async def tls_upstream(pki: Pki) -> AsyncIterator[TlsUpstream]:
    """An https replica with a certificate for `upstream.test` from the private server CA, requiring a
    client certificate from the client CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.path("client-ca.crt")))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.path("upstream.test.crt")), str(pki.path("upstream.test.key")))
    upstream = TlsUpstream(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            cert = writer.get_extra_info("peercert") or {}
            subject = dict(pair[0] for pair in cert.get("subject", ()))
            upstream.peers.append(str(subject.get("commonName", "")))
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
                await writer.drain()
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0, ssl=context)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def mount(secrets: Path, secret: str, key: str, source: Path) -> None:
    """Put a file where the kubelet mounts a Secret key: `<secrets>/<secret>/<key>`."""
    (secrets / secret).mkdir(parents=True, exist_ok=True)
    (secrets / secret / key).write_bytes(source.read_bytes())


@pytest.fixture
def secrets(tmp_path: Path, pki: Pki) -> Path:
    secrets = tmp_path / "secrets"
    mount(secrets, "upstream-ca", "ca.crt", pki.path("server-ca.crt"))
    mount(secrets, "upstream-client", "tls.crt", pki.path("modelroute-client.crt"))
    mount(secrets, "upstream-client", "tls.key", pki.path("modelroute-client.key"))
    return secrets


FULL = TlsConfig(
    ca_bundle=CredentialRef(secret="upstream-ca", key="ca.crt"),
    client_certificate=CredentialRef(secret="upstream-client", key="tls.crt"),
    client_key=CredentialRef(secret="upstream-client", key="tls.key"),
    server_name="upstream.test",
)


async def fetch(pool: Pool, url: str, **kwargs: object) -> bytes:
    response = await pool.post(url, "/chat/completions", b"{}", {}, connect_timeout=2, **kwargs)  # type: ignore[arg-type]
    return await response.read()


async def test_private_ca_and_client_certificate(tls_upstream: TlsUpstream, secrets: Path) -> None:
    pool, contexts = Pool(), TlsContexts(secrets)
    tls = contexts.get("llama", FULL)
    assert await fetch(pool, tls_upstream.url, tls=tls) == b"secure"
    assert await fetch(pool, tls_upstream.url, tls=contexts.get("llama", FULL)) == b"secure"
    assert tls_upstream.peers == ["modelroute-client"]  # one connection, reused, with our certificate
    await pool.close()


@pytest.mark.parametrize(
    ("tls", "error"),
    [
        (None, "certificate verify failed"),  # the system trust store does not know the private CA
        (FULL.model_copy(update={"server_name": "other.test"}), "certificate verify failed"),
        (
            FULL.model_copy(update={"client_certificate": None, "client_key": None}),
            "certificate required|closed by upstream|alert",
        ),
    ],
    ids=["system trust", "wrong server name", "no client certificate"],
)
async def test_tls_refusals(
    tls_upstream: TlsUpstream, secrets: Path, tls: TlsConfig | None, error: str
) -> None:
    pool = Pool()
    with pytest.raises(UpstreamError, match=error):
        await fetch(pool, tls_upstream.url, tls=TlsContexts(secrets).get("llama", tls))
    await pool.close()


async def test_rotated_secret_files_rebuild_the_context(secrets: Path, pki: Pki) -> None:
    now = [0.0]
    contexts = TlsContexts(secrets, clock=lambda: now[0])
    first = contexts.get("llama", FULL)
    assert first is not None and contexts.get("llama", FULL) is first
    mount(secrets, "upstream-ca", "ca.crt", pki.path("other-ca.crt"))  # the kubelet swapped the Secret
    assert contexts.get("llama", FULL) is first  # within the recheck interval: no file is looked at
    now[0] += 60  # past the recheck interval
    second = contexts.get("llama", FULL)
    assert second is not None and second.token != first.token
    now[0] += 60
    assert contexts.get("llama", FULL) is second  # unchanged files: the same context


async def test_bad_key_material_names_the_secret_key(secrets: Path) -> None:
    (secrets / "upstream-ca" / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"CA bundle upstream-ca/ca.crt is not a PEM") as caught:
        TlsContexts(secrets).get("llama", FULL)
    assert "not a certificate" not in str(caught.value)
    key = secrets / "upstream-client" / "tls.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    (secrets / "upstream-ca" / "ca.crt").unlink()
    with pytest.raises(TlsError, match=r"cannot read CA bundle upstream-ca/ca\.crt"):
        TlsContexts(secrets).get("llama", FULL)
    no_ca = FULL.model_copy(update={"ca_bundle": None})
    with pytest.raises(TlsError, match=r"client certificate upstream-client .*cannot be loaded"):
        TlsContexts(secrets).get("llama", no_ca)


async def test_https_replica_with_a_private_ca_and_client_certificate(
    start_sidecar: SidecarFactory,
    upstreams: dict[str, FakeUpstream],
    tls_upstream: TlsUpstream,
    secrets_dir: Path,
    pki: Pki,
) -> None:
    mount(secrets_dir, "llm-ca", "ca.crt", pki.path("server-ca.crt"))
    mount(secrets_dir, "llm-client", "tls.crt", pki.path("modelroute-client.crt"))
    mount(secrets_dir, "llm-client", "tls.key", pki.path("modelroute-client.key"))
    config = build_config({**{n: f.url for n, f in upstreams.items()}, "eu-1": tls_upstream.url})
    data = config.model_dump(mode="json", by_alias=True)
    llama = next(e for e in data["endpoints"] if e["name"] == "llama")
    llama["tls"] = {
        "caBundle": {"secret": "llm-ca", "key": "ca.crt"},
        "clientCertificate": {"secret": "llm-client", "key": "tls.crt"},
        "clientKey": {"secret": "llm-client", "key": "tls.key"},
        "serverName": "upstream.test",
    }
    running = await start_sidecar(RouterConfig.model_validate(data).seal())
    response = await running.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert response.headers["x-modelroute-replica"] == "eu-1"
    assert response.http_response.text == "secure"
    assert tls_upstream.peers == ["modelroute-client"]


# --- proxies -------------------------------------------------------------------------------------------


@dataclass
class ForwardProxy:
    """A tiny forward proxy: CONNECT tunnels, and absolute-form requests forwarded in origin form."""

    port: int = 0
    heads: list[str] = field(default_factory=list)
    credentials: str = ""
    """Expected `Proxy-Authorization` value; empty accepts anyone."""


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            proxy.heads.append(head)
            lines = head.split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = dict(line.split(": ", 1) for line in lines[1:] if line)
            if proxy.credentials and headers.get("Proxy-Authorization") != proxy.credentials:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
                kept = [line for line in lines[1:] if line and not line.startswith("Proxy-Authorization")]
                up_writer.write(f"{method} {url.path} {version}\r\n".encode() + "".join(
                    f"{line}\r\n" for line in kept).encode() + b"\r\n")  # fmt: skip
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await start_raw_server(handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    async with server:
        yield proxy


def basic(user_info: str) -> str:
    return "Basic " + base64.b64encode(user_info.encode()).decode()


async def test_https_upstream_through_a_connect_tunnel(
    forward_proxy: ForwardProxy, tls_upstream: TlsUpstream, secrets: Path
) -> None:
    forward_proxy.credentials = basic("robot:p@ss:word")
    proxies = ProxyConfig.from_environ(
        {"HTTPS_PROXY": f"http://robot:p%40ss%3Aword@127.0.0.1:{forward_proxy.port}"}
    )
    pool = Pool(proxies=proxies)
    tls = TlsContexts(secrets).get("llama", FULL)
    assert await fetch(pool, tls_upstream.url, tls=tls) == b"secure"
    assert await fetch(pool, tls_upstream.url, tls=tls) == b"secure"
    assert len(forward_proxy.heads) == 1  # one tunnel, reused
    assert forward_proxy.heads[0].startswith(f"CONNECT 127.0.0.1:{tls_upstream.port} HTTP/1.1\r\n")
    assert tls_upstream.peers == ["modelroute-client"]  # TLS end to end, through the tunnel
    assert "p@ss" not in repr(proxies) and "p%40ss" not in proxies.describe()
    await pool.close()


async def test_refused_tunnel_is_an_upstream_error(
    forward_proxy: ForwardProxy, tls_upstream: TlsUpstream, secrets: Path
) -> None:
    forward_proxy.credentials = basic("robot:right")
    pool = Pool(
        proxies=ProxyConfig.from_environ(
            {"https_proxy": f"http://robot:wrong@127.0.0.1:{forward_proxy.port}"}
        )
    )
    with pytest.raises(UpstreamError, match=r"refused CONNECT .*status 407"):
        await fetch(pool, tls_upstream.url, tls=TlsContexts(secrets).get("llama", FULL))
    await pool.close()


async def test_http_upstream_through_the_proxy_in_absolute_form(forward_proxy: ForwardProxy) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
            await writer.drain()
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        env = {"HTTP_PROXY": f"http://u:pw@127.0.0.1:{forward_proxy.port}"}
        pool = Pool(proxies=ProxyConfig.from_environ(env))
        assert await fetch(pool, f"http://127.0.0.1:{port}/v1") == b"plain"
        head = forward_proxy.heads[0]
        assert head.startswith(f"POST http://127.0.0.1:{port}/v1/chat/completions HTTP/1.1\r\n")
        assert f"Proxy-Authorization: {basic('u:pw')}\r\n" in head
        await pool.close()
        # NO_PROXY exempts the host: direct, the proxy sees nothing more
        direct = Pool(proxies=ProxyConfig.from_environ({**env, "NO_PROXY": "localhost,127.0.0.0/8"}))
        assert await fetch(direct, f"http://127.0.0.1:{port}/v1") == b"plain"
        assert len(forward_proxy.heads) == 1
        await direct.close()


async def test_operator_probes_trust_the_endpoints_ca_bundle(pki: Pki) -> None:
    """The operator's health probe verifies an https replica against the endpoint's CA bundle and
    server name; with the system trust store alone the private CA fails it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.path("upstream.test.crt")), str(pki.path("upstream.test.key")))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    trust = ssl.create_default_context(cadata=pki.path("server-ca.crt").read_text())
    async with server, aiohttp.ClientSession() as session:
        assert await probe(session, url, "/v1/models", 2, None, trust, "upstream.test") == (True, None)
        ok, error = await probe(session, url, "/v1/models", 2, None)
        assert not ok and error is not None and "certificate" in error.lower()


class SecretsApi:
    """The KubeApi calls the health monitor makes, over Secrets held here (`forbidden`: names RBAC hides)."""

    def __init__(self, secrets: dict[str, dict[str, str]], forbidden: frozenset[str] = frozenset()) -> None:
        self.secrets, self.forbidden = secrets, forbidden
        self.patches: list[dict[str, Any]] = []

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        if name in self.forbidden:
            raise SecretForbiddenError(namespace, name)
        try:
            return self.secrets[name][key]
        except KeyError:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}") from None

    async def patch_status(self, kind: Any, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    async def record_event(self, *args: Any, **kwargs: Any) -> None:
        return None


def _mtls_endpoint(url: str, tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": "secure", "namespace": "team-a", "resourceVersion": "1"},
        "spec": {
            "model": "org/secure",
            "replicas": [{"name": "eu-1", "region": "eu-west-1", "url": url}],
            "healthCheck": {"enabled": True, "interval": "10s", "timeout": "2s", "healthyThreshold": 1},
            "tls": tls,
        },
    }


async def _probe_once(api: SecretsApi, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(api, session)  # type: ignore[arg-type]
        await monitor.check_endpoint(("team-a", "secure"), body)
    assert api.patches, "the probe wrote no status"
    replica: dict[str, Any] = api.patches[-1]["replicas"][0]
    return replica


MTLS = {
    "caBundle": {"name": "upstream-ca", "key": "ca.crt"},
    "clientCertificate": {"name": "upstream-client"},
    "serverName": "upstream.test",
}


def _tls_secrets(pki: Pki) -> dict[str, dict[str, str]]:
    return {
        "upstream-ca": {"ca.crt": pki.path("server-ca.crt").read_text()},
        "upstream-client": {
            "tls.crt": pki.path("modelroute-client.crt").read_text(),
            "tls.key": pki.path("modelroute-client.key").read_text(),
        },
    }


async def test_operator_probes_present_the_endpoints_client_certificate(
    tls_upstream: TlsUpstream, pki: Pki
) -> None:
    """A replica that requires a client certificate is healthy to the operator's probe, which presents
    the certificate of `spec.tls.clientCertificate`, trusts `caBundle` and verifies `serverName`."""
    replica = await _probe_once(SecretsApi(_tls_secrets(pki)), _mtls_endpoint(tls_upstream.url, MTLS))
    assert replica["health"] == "Healthy", replica
    assert tls_upstream.peers == ["modelroute-client"]
    # Without the certificate the same replica refuses the probe: it is the certificate that counts.
    ca_only = {k: v for k, v in MTLS.items() if k != "clientCertificate"}
    replica = await _probe_once(SecretsApi(_tls_secrets(pki)), _mtls_endpoint(tls_upstream.url, ca_only))
    assert replica["health"] == "Unknown" and replica["consecutiveFailures"] == 1, replica
    assert tls_upstream.peers == ["modelroute-client"]


@pytest.mark.parametrize(
    ("forbidden", "drop", "reason"),
    [
        (frozenset({"upstream-client"}), None, "may not read Secret team-a/upstream-client"),
        (frozenset(), "tls.key", "TLS Secret unreadable"),
    ],
    ids=["forbidden", "missing-key"],
)
async def test_an_unusable_client_certificate_leaves_health_alone_and_says_why(
    tls_upstream: TlsUpstream, pki: Pki, forbidden: frozenset[str], drop: str | None, reason: str
) -> None:
    secrets = _tls_secrets(pki)
    if drop:
        del secrets["upstream-client"][drop]
    replica = await _probe_once(SecretsApi(secrets, forbidden), _mtls_endpoint(tls_upstream.url, MTLS))
    assert replica["health"] == "Unknown" and replica.get("consecutiveFailures", 0) == 0, replica
    assert replica["lastError"].startswith("not probed: ") and reason in replica["lastError"], replica
    assert "PRIVATE KEY" not in replica["lastError"]
    assert tls_upstream.peers == []  # no connection without the endpoint's certificate


def test_client_context_refuses_a_key_that_does_not_match(pki: Pki) -> None:
    with pytest.raises(ssl.SSLError):
        client_context(
            None, pki.path("modelroute-client.crt").read_text(), pki.path("upstream.test.key").read_text()
        )

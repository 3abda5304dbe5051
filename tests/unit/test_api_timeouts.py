"""A hung API server (it accepts connections and never answers) costs each call its timeout, never a hang:
the kubernetes-client calls of `kube` and of the Lease lock, and Kopf's own client settings."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import kopf
import pytest
import urllib3
from kubernetes import client

from modelroute_operator.clients.kube import ApiTimeout, KubeApi, TransientApiError
from modelroute_operator.clients.leader import KubeLeaseLock, LeaderElector, LeaseSettings
from modelroute_operator.logic.resources import Canary
from modelroute_operator.runtime.handlers import configure_kopf

BOUNDS = ApiTimeout(connect=0.3, read=0.5)
SLACK = 1.0
"""For a loaded 2-core machine; without the timeouts these calls would block forever."""


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A loopback listener that accepts and holds connections without ever reading or answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def api_client(host: str) -> client.ApiClient:
    configuration = client.Configuration(host=host)
    configuration.retries = False
    return client.ApiClient(configuration)


@pytest.mark.parametrize(
    "call",
    [
        lambda kube: kube.list_objects("ns"),
        lambda kube: kube.read_live_config("ns"),
        lambda kube: kube.patch_status(Canary, "ns", "c", {}),
        lambda kube: kube.list_pods("ns", "a=b"),
    ],
    ids=["list_objects", "read_live_config", "patch_status", "list_pods"],
)
async def test_kube_calls_fail_within_their_timeout(hung_server: str, call: object) -> None:
    kube = KubeApi(api_client(hung_server), BOUNDS)
    started = time.monotonic()
    with pytest.raises(TransientApiError):
        await call(kube)  # type: ignore[operator]
    assert time.monotonic() - started < BOUNDS.read + SLACK
    kube.close()


def test_the_default_client_has_no_urllib3_retries() -> None:
    # Retries inside urllib3 would multiply every timeout (4 attempts by default).
    assert KubeApi()._api_client.configuration.retries is False


def test_lease_calls_fail_within_their_timeout(hung_server: str) -> None:
    lock = KubeLeaseLock("ns", "lease", api_client(hung_server), BOUNDS)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        lock.get()
    assert time.monotonic() - started < BOUNDS.read + SLACK
    elector = LeaderElector(LeaseSettings(namespace="ns", identity="me"), lock)
    started = time.monotonic()
    assert not elector.try_acquire_or_renew()
    assert time.monotonic() - started < BOUNDS.read + SLACK


def test_kopf_waits_are_bounded() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    assert settings.networking.request_timeout is not None and settings.networking.request_timeout <= 30
    assert settings.networking.connect_timeout is not None and settings.networking.connect_timeout <= 5
    assert settings.watching.connect_timeout is not None and settings.watching.connect_timeout <= 5
    assert settings.watching.client_timeout is not None
    assert settings.watching.server_timeout is not None
    assert settings.watching.server_timeout < settings.watching.client_timeout
    backoffs = settings.networking.error_backoffs
    assert isinstance(backoffs, tuple) and backoffs and max(backoffs) <= 1.0
    # ...and enough of them to outlast an API server's restart (503 until its paths are installed):
    # Kopf ends the operator when a watch's attempts are spent with a server error
    assert sum(backoffs) >= 30
    assert settings.watching.reconnect_backoff <= 1.0

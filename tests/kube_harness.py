"""Test harness around a real control plane: kubectl calls, fresh namespaces, the operator as a process.

Shared by the integration and e2e suites. Polls with deadlines; never sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from control_plane import ControlPlane, ensure_binaries, free_port  # noqa: E402, F401

_names = itertools.count(1)


def wait_for[T](check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the condition may raise while things converge
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


@dataclass
class Kubectl:
    """kubectl bound to one control plane."""

    plane: ControlPlane

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.plane.kubectl), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.plane.kubectl_env(),
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(
        self, manifest: str, namespace: str, check: bool = True, server_side: bool = True
    ) -> subprocess.CompletedProcess[str]:
        flags = ["--server-side", "--field-manager=tests"] if server_side else []
        return self.run("apply", "-n", namespace, *flags, "-f", "-", stdin=manifest, check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


def resource_name(kind: str) -> str:
    """What kubectl calls a kind: our kinds by their CRD singular (a Canary is a `modelcanary`, so that
    Flagger's `canary` stays unambiguous), any other kind lower-cased."""
    from modelroute_operator.logic.resources import KIND_BY_NAME

    resource = KIND_BY_NAME.get(kind)
    return resource.singular if resource is not None else kind.lower()


def new_namespace(kubectl: Kubectl, prefix: str) -> str:
    """A fresh namespace (namespaces cannot be deleted without a controller-manager; never reuse)."""
    name = f"{prefix}-{os.getpid() % 10000}-{next(_names)}"
    kubectl.run("create", "namespace", name)
    return name


@dataclass
class OperatorProcess:
    """The operator, run as `python -m modelroute_operator.runtime.main` against the control plane."""

    plane: ControlPlane
    log_path: Path
    namespaces: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    def start(self) -> None:
        args = [sys.executable, "-m", "modelroute_operator.runtime.main", *self.extra_args]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        env = {**self.plane.kubectl_env(), **self.extra_env, "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines_since(self, offset: int) -> str:
        return self.log()[offset:]


@contextlib.contextmanager
def running_control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    """A control plane for the duration of a `with` block (built on a machine's first run)."""
    plane = ControlPlane(state_dir=state_dir, bin_dir=ensure_binaries())
    plane.start()
    try:
        yield plane
    finally:
        plane.destroy()


SIDECAR_LABELS = {"modelroute.dev/router": "sidecar"}


def create_pod(
    kubectl: Kubectl, namespace: str, name: str, admin_port: int, labels: dict[str, str] | None = None
) -> None:
    """A Pod object for a simulated sidecar (no kubelet: nothing runs it; the test starts the process)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels if labels is not None else dict(SIDECAR_LABELS),
            "annotations": {"modelroute.dev/admin-port": str(admin_port)},
        },
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    kubectl.apply(json.dumps(pod), namespace)


def set_pod_status(kubectl: Kubectl, namespace: str, name: str, ip: str, ready: bool) -> None:
    """What a kubelet would report: Running with `ip`, Ready or not."""
    status = "True" if ready else "False"
    patch = {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        }
    }
    kubectl.run(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
    )


@dataclass
class SidecarProcess:
    """A router sidecar process bound to a loopback address, as a pod with that IP would run it."""

    name: str
    ip: str
    port: int
    admin_port: int
    region: str
    workdir: Path
    namespace: str = ""
    token: str = ""
    config_json: str = ""
    extra_args: list[str] = field(default_factory=list)
    python: str = sys.executable
    """The interpreter whose `modelroute_sidecar` runs: a sidecar of an earlier commit has its own
    (`tests.sidecar_builds`)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.ip}:{self.port}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://{self.ip}:{self.admin_port}"

    @property
    def audit_path(self) -> Path:
        return self.workdir / f"{self.name}.audit.jsonl"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        token_file = self.workdir / f"{self.name}.token"
        token_file.write_text(self.token)
        args = [
            self.python,
            "-m",
            "modelroute_sidecar.main",
            "--host",
            self.ip,
            "--port",
            str(self.port),
            "--admin-host",
            self.ip,
            "--admin-port",
            str(self.admin_port),
            "--admin-token-file",
            str(token_file),
            "--region",
            self.region,
            "--pod-name",
            self.name,
            "--namespace",
            self.namespace,
            "--audit-log",
            str(self.audit_path),
            *self.extra_args,
        ]
        if self.config_json:
            config_file = self.workdir / f"{self.name}.config.json"
            config_file.write_text(self.config_json)
            args += ["--config-file", str(config_file)]
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self._alive(), f"sidecar {self.name} to listen", 30)

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"sidecar {self.name} exited:\n{(self.workdir / f'{self.name}.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{self.admin_url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def version(self) -> str:
        return str(self.version_document().get("version") or "")

    def version_document(self) -> dict[str, Any]:
        """The sidecar's `GET /config/version` answer ({} when it does not answer)."""
        request = urllib.request.Request(
            f"{self.admin_url}/config/version", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                document: dict[str, Any] = json.loads(r.read())
                return document
        except OSError:
            return {}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class UpstreamProcess:
    """A fake OpenAI-compatible server process (tests/fakes/upstream.py)."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.upstream", "--port", str(self.port), "--name", self.name],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        wait_for(self._listening, f"upstream {self.name}", 20)

    def _listening(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_fake/requests", timeout=2) as r:
            result: list[dict[str, Any]] = json.loads(r.read())
            return result

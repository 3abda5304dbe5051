"""Test harness around a real control plane: kubectl calls, fresh namespaces, the operator as a process.

Shared by the integration and e2e suites. Polls with deadlines; never sleeps a fixed time.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from control_plane import ControlPlane, ensure_binaries  # noqa: E402

T = TypeVar("T")
_names = itertools.count(1)


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
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


def new_namespace(kubectl: Kubectl, prefix: str) -> str:
    """A fresh namespace (namespaces cannot be deleted without a controller-manager; never reuse)."""
    name = f"{prefix}-{os.getpid() % 10000}-{next(_names)}"
    kubectl.run("create", "namespace", name)
    return name


@dataclass
class OperatorProcess:
    """The operator, run as `python -m modelroute_operator.main` against the control plane."""

    plane: ControlPlane
    log_path: Path
    namespaces: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        args = [sys.executable, "-m", "modelroute_operator.main"]
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


def start_control_plane(state_dir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(state_dir=state_dir, bin_dir=ensure_binaries())
    plane.start()
    try:
        yield plane
    finally:
        plane.destroy()

"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, envtest-style (no kubelet).

Used by the pytest fixtures, the demo and by hand (`scripts/control-plane start|stop|env`). Binaries come
from `scripts/k8s-bins/build.sh`, which builds them once per machine into a cache keyed by version.
Standard library only, so it runs before our package is installed.

Two identities are written: `admin` (system:masters) in `kubeconfig`, and `viewer` (no groups) in
`kubeconfig-viewer`, for tests of least-privilege RBAC.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "k8s-bins" / "build.sh"
DEFAULT_STATE = REPO / ".local" / "control-plane"
if str(REPO) not in sys.path:  # run as a script: only scripts/ itself is on sys.path
    sys.path.insert(0, str(REPO))
from tests.ports import free_port  # noqa: E402  (standard library only)


def ensure_binaries() -> Path:
    """The directory holding kube-apiserver, etcd and kubectl, building them on a machine's first run."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "k8s"], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    return Path(out.splitlines()[-1])


def ensure_helm() -> Path:
    """Path of the helm binary, building it on a machine's first run."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "helm"], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    return Path(out.splitlines()[-1]) / "helm"


def _wait_until(check: object, what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log tail:\n{_tail(log)}")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s; log tail:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ControlPlane:
    """One etcd + kube-apiserver pair with its state directory."""

    state_dir: Path
    bin_dir: Path
    api_port: int = 0
    etcd_port: int = 0
    admin_token: str = ""
    viewer_token: str = ""

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def viewer_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig-viewer"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    def start(self, timeout: float = 90.0) -> None:
        """Start etcd and kube-apiserver, write kubeconfigs, and wait until the API server is ready."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.api_port = self.api_port or free_port()
        self.etcd_port = self.etcd_port or free_port()
        self.admin_token = self.admin_token or secrets.token_hex(16)
        self.viewer_token = self.viewer_token or secrets.token_hex(16)
        pki = self.state_dir / "pki"
        pki.mkdir(exist_ok=True)
        if not (pki / "sa.key").exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True, capture_output=True
            )
            subprocess.run(
                ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
                check=True,
                capture_output=True,
            )
        (pki / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n{self.viewer_token},viewer,viewer-uid\n'
        )
        etcd_log = self.state_dir / "etcd.log"
        etcd = subprocess.Popen(
            [
                str(self.bin_dir / "etcd"),
                "--data-dir",
                str(self.state_dir / "etcd-data"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                "http://127.0.0.1:0",
                "--unsafe-no-fsync",  # tests and demos: durability across power loss does not matter
                "--log-level",
                "warn",
            ],
            stdout=etcd_log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._write_pid("etcd", etcd.pid)
        _wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{self.etcd_port}/health"), "etcd", timeout, etcd, etcd_log
        )
        self.start_apiserver(timeout)

    def start_apiserver(self, timeout: float = 90.0) -> None:
        """Start (or restart) kube-apiserver on its port and wait until it is ready."""
        pki = self.state_dir / "pki"
        api_log = self.state_dir / "kube-apiserver.log"
        api = subprocess.Popen(
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={pki}",
                f"--secure-port={self.api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # No controller-manager creates the "default" ServiceAccount; the plugin would refuse pods.
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--token-auth-file={pki / 'tokens.csv'}",
                f"--service-account-issuer=https://127.0.0.1:{self.api_port}/",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--v=0",
            ],
            stdout=api_log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._write_pid("kube-apiserver", api.pid)
        _wait_until(
            lambda: _http_ok(f"{self.server}/readyz", self.admin_token),
            "kube-apiserver",
            timeout,
            api,
            api_log,
        )
        self._write_kubeconfig(self.kubeconfig, "admin", self.admin_token)
        self._write_kubeconfig(self.viewer_kubeconfig, "viewer", self.viewer_token)
        (self.state_dir / "state.json").write_text(
            json.dumps(
                {
                    "apiPort": self.api_port,
                    "etcdPort": self.etcd_port,
                    "binDir": str(self.bin_dir),
                    "adminToken": self.admin_token,
                    "viewerToken": self.viewer_token,
                }
            )
        )

    def _write_pid(self, name: str, pid: int) -> None:
        (self.state_dir / f"{name}.pid").write_text(str(pid))

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        # JSON is valid YAML; kubectl, kopf and the kubernetes client all read it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelroute-local",
                    "cluster": {"server": self.server, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "modelroute-local", "user": user}}],
            "current-context": user,
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd keeps the data), e.g. to test clients riding out an outage."""
        self._stop("kube-apiserver")

    def stop(self) -> None:
        """Stop both processes (API server first) and wait for them to exit."""
        for name in ("kube-apiserver", "etcd"):
            self._stop(name)

    def _stop(self, name: str) -> None:
        pid_file = self.state_dir / f"{name}.pid"
        if not pid_file.exists():
            return
        _terminate(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop and remove all state."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def kubectl_env(self) -> dict[str, str]:
        """Environment for child processes that should talk to this control plane."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    @classmethod
    def load(cls, state_dir: Path) -> ControlPlane:
        """A handle on a control plane started earlier (by another process) from its state directory."""
        state = json.loads((state_dir / "state.json").read_text())
        return cls(
            state_dir=state_dir,
            bin_dir=Path(state["binDir"]),
            api_port=state["apiPort"],
            etcd_port=state["etcdPort"],
            admin_token=state["adminToken"],
            viewer_token=state["viewerToken"],
        )


def _http_ok(url: str, token: str = "") -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _terminate(pid: int, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            # Reap if it is our child; otherwise just poll.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="control-plane", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "start", "stop", "destroy", "env", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    if args.command == "build":
        print(ensure_binaries())
        print(ensure_helm())
        return 0
    if args.command == "start":
        if (args.state_dir / "state.json").exists():
            existing = ControlPlane.load(args.state_dir)
            if _http_ok(f"{existing.server}/readyz", existing.admin_token):
                print(f"already running: export KUBECONFIG={existing.kubeconfig}")
                return 0
            existing.stop()
        plane = ControlPlane(state_dir=args.state_dir, bin_dir=ensure_binaries())
        started = time.monotonic()
        plane.start()
        print(f"kube-apiserver ready at {plane.server} in {time.monotonic() - started:.1f}s")
        print(f"export KUBECONFIG={plane.kubeconfig} PATH={plane.bin_dir}:$PATH")
        return 0
    if not (args.state_dir / "state.json").exists():
        print("not running", file=sys.stderr)
        return 1
    plane = ControlPlane.load(args.state_dir)
    if args.command == "stop":
        plane.stop()
    elif args.command == "destroy":
        plane.destroy()
    elif args.command == "env":
        print(f"export KUBECONFIG={plane.kubeconfig} PATH={plane.bin_dir}:$PATH")
    elif args.command == "status":
        ready = _http_ok(f"{plane.server}/readyz", plane.admin_token)
        print(f"{plane.server} {'ready' if ready else 'not ready'}")
        return 0 if ready else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

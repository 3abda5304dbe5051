"""A private redis-server for the tests and benches of fleet limits (Debian's `redis-server`, installed by
`scripts/system-packages fleet`): on a free loopback port, in its own directory, with a password, and
durable (append-only file, fsync always) so a SIGKILL loses no acknowledged count."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

PASSWORD = "fleet-test-password"


class RedisServer:
    """One redis-server process; `kill` and `start` again on the same port and data."""

    def __init__(self, directory: Path, port: int | None = None, tls: bool = False) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        """Serve TLS only (`rediss://`), with a certificate of a private CA (`ca_file`) for 127.0.0.1."""
        self.ca_file = directory / "tls" / "ca.crt"
        self.password_file = directory / "password"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(PASSWORD + "\n")

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return ["--port", str(self.port)]
        from modelroute_operator.runtime.certificates import generate_certificates

        if not self.ca_file.exists():
            generate_certificates(self.directory / "tls", ["127.0.0.1"])
        tls = self.directory / "tls"
        return [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls / "tls.crt"),
            "--tls-key-file", str(tls / "tls.key"), "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self, within: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/system-packages fleet (as root)")
        args = [
            binary, *self._tls_args(), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--requirepass", PASSWORD, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + within
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(self.directory / 'redis.log').read_text()}"
                )
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with self._connect() as s:
                s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
                seen = b""
                while b"+PONG" not in seen:
                    piece = s.recv(100)
                    if not piece:
                        return False
                    seen += piece
                return True
        except OSError:
            return False

    def _connect(self) -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if not self.tls:
            return raw
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def kill(self) -> None:
        """SIGKILL: the store is gone at once, mid-request."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, decode_responses=True, **tls)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.kill()

"""Entry point `modelroute-sidecar`: run one data-plane process, or a parent supervising several.

Single process (`--workers 1`, the default): the data app and the admin app share one event loop, and
the process watches its config file itself.

Several processes (`--workers N`): the parent binds nothing on the data port. It forks N workers that
each bind it with SO_REUSEPORT (the kernel spreads connections across them, so every core serves),
runs the admin app, watches the config file, and fans every config (push or file change) out to the
workers over unix sockets in a private directory, answering a push only once every worker applied it.
It restarts a worker that dies (with exponential backoff, logging why it ended) and hands it the
current config; the admin port keeps answering meanwhile, naming the workers that are down.
`/metrics` on any worker and `/stats` on the admin port are summed over the workers, so a scrape sees
the pod, not whichever process accepted the connection.

Workers are forked, not started: the parent has imported everything and validated the config (the
RouterConfig models and the engine's indexes built), so a worker shares those pages with it
copy-on-write and starts in milliseconds, with no second interpreter start or import. Before each
fork the parent collects garbage and freezes what is left (`gc.freeze`), so that no collection in
either process walks, and so unshares, the inherited objects; it stops its log writer thread, so that
no lock is held across the fork. The child never returns into the parent's code: it freezes again,
closes the parent's sockets and event-loop descriptors, starts its own logging and its own event loop,
installs the parent's live config (the one the parent runs at the moment of the fork, never an older
bootstrap file), and leaves with `os._exit`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from . import lean  # noqa: F401  # first: pydantic must not load its plugin machinery (see lean.py)
from .admin import (
    AdminToken,
    LocalFleet,
    WorkerFleet,
    WorkerSockets,
    admin_server,
    control_server,
    sibling_claims,
    sibling_metrics,
    worker_socket,
)
from .app import build_sidecar, data_plane
from .configstore import ConfigStore, Snapshot
from .lazyfleet import needs_fleet
from .ratelimit import TENANT_TABLE_FILE, TenantTable
from .server import DataServer
from .settings import Settings, parse_settings
from .state import report_failure

log = logging.getLogger("modelroute_sidecar")

WORKER_START_SECONDS = 30.0
RESTART_FIRST_SECONDS = 0.5
"""Delay before restarting a worker that died; doubled for each death in a row."""
RESTART_MAX_SECONDS = 30.0
"""The longest delay between restarts of a worker that keeps dying (a crash loop costs little)."""
RESTART_STABLE_SECONDS = 60.0
"""A worker that stayed up this long starts its next crash from the first delay again."""
SUPERVISE_SECONDS = 0.1
"""How soon the supervisor tries again to give a worker that missed a config the current one."""
SUPERVISE_IDLE_SECONDS = 5.0
"""Its look with nothing pending: a safety net only, since a worker's death (SIGCHLD) and a missed
config wake it at once. Polling at 10 Hz cost an idle pod's parent 2.7 ms of CPU a second."""


def install_uvloop() -> None:
    """Use uvloop when it is installed (roughly doubles aiohttp's throughput)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def settle_memory() -> None:
    """Move everything loaded at start-up out of the collector's sight: config, engine indexes and
    imported modules live for the whole process, and re-scanning them in every full collection shows
    up as tail latency under load. Then give the C heap's free pages back to the system: importing
    and validating leave ~1 MiB of freed memory that malloc keeps resident otherwise."""
    gc.collect()
    gc.freeze()
    trim_heap()


def trim_heap() -> None:
    """`malloc_trim(0)`: return the free pages of the C heap (glibc; elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # no ctypes, or a libc without malloc_trim
        pass


async def wait_for_stop() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


ADMIN_GRACE_SECONDS = 1.0
"""On stop, admin and control calls in flight get this long to finish."""


async def run_single(settings: Settings) -> None:
    """One process serving the data port and the admin port."""
    sidecar = build_sidecar(settings)
    async with data_plane(sidecar, settings.host, settings.port):
        servers = []
        if settings.admin_port:
            admin = admin_server(LocalFleet(sidecar), admin_token(settings))
            await admin.start(settings.admin_host, settings.admin_port)
            servers.append(admin)
        settle_memory()
        log.info(
            "sidecar serving on %s:%d (admin %s), config %s",
            settings.host, settings.port, settings.admin_port or "off", sidecar.config.version or "none",
        )  # fmt: skip
        try:
            await wait_for_stop()
        finally:
            for server in servers:
                await server.close(ADMIN_GRACE_SECONDS)


async def run_worker(settings: Settings, live: Snapshot | None = None) -> None:
    """One of N data-plane processes: the data port (shared) and its control socket, serving `live`
    (the parent's config at the fork) from the start."""
    assert settings.control_dir is not None
    sidecar = build_sidecar(settings)
    if live is not None:
        sidecar.config.install(live)
    sockets = WorkerSockets(settings.control_dir, settings.workers)
    sidecar.metrics_source = sibling_metrics(sockets)
    sidecar.sibling_claim = sibling_claims(sockets, settings.worker_index)
    async with data_plane(sidecar, settings.host, settings.port, reuse_port=True):
        control = control_server(sidecar)
        path = worker_socket(settings.control_dir, settings.worker_index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a previous incarnation of this worker
        await control.start_unix(str(path))
        settle_memory()
        try:
            await wait_for_stop()
        finally:
            await control.close(ADMIN_GRACE_SECONDS)
            await sockets.close()


class WorkerProcess:
    """A forked worker, with the part of `subprocess.Popen`'s interface the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        """The exit code once it ended; negative: killed by that signal (as Popen says it)."""

    def poll(self) -> int | None:
        """The exit code if it ended (it is reaped then), else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its code is lost
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """Wait for the end; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"worker pid {self.pid} still running after {timeout} s")
            time.sleep(0.01)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def inherited_descriptors() -> list[int]:
    """This process's sockets and event-loop descriptors (epoll, eventfd, timerfd, signalfd), which
    a forked child closes: it must not hold the parent's listening port or connections open, nor
    share its epoll instance. Pipes and files stay (libuv re-creates its own pipes in the child)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory listing's own descriptor, closed already
        if target.startswith(("socket:", "anon_inode:[eventpoll]", "anon_inode:[eventfd]",
                              "anon_inode:[timerfd]", "anon_inode:[signalfd]")):  # fmt: skip
            found.append(fd)
    return found


def fork(child: Callable[[], int], logs: LogQueue | None = None) -> WorkerProcess:
    """Fork a process that runs `child` and exits with the code it returns (1 on an exception)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # or the child would write the parent's buffered output again
    settle_memory()  # shared pages stay shared: no collector in either process walks these objects
    inherited = inherited_descriptors()
    if logs is not None:
        logs.stop_writer()  # no thread may hold a lock across the fork; the child starts its own
    try:
        pid = os.fork()
    except BaseException:
        if logs is not None:
            logs.start_writer()
        raise
    if pid == 0:
        _become_child(child, inherited)
    if logs is not None:
        logs.start_writer()
    return WorkerProcess(pid)


def _become_child(child: Callable[[], int], inherited: list[int]) -> NoReturn:
    """The first steps of a forked child, then `child`, then the exit: never back into the caller."""
    code = 1
    try:
        gc.freeze()  # the parent's objects are never collected here (some hold its descriptors)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the child's own loop handles it
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the parent's supervisor wake, not the child's
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        code = child()
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def worker_process(settings: Settings, live: Snapshot | None) -> int:
    """The body of a forked worker: its name, its own log writer and event loop, then serving."""
    with contextlib.suppress(OSError):  # `ps`, `top` and the tests tell the workers apart by it
        Path("/proc/self/comm").write_text(worker_name(settings.worker_index))
    logs = configure_logging(settings.log_level)
    try:
        asyncio.run(run_worker(settings, live))
    finally:
        logs.stop_writer()
    return 0


def worker_name(index: int) -> str:
    """The process name of worker `index` (at most 15 characters: the kernel's limit)."""
    return f"modelroute-w{index}"


WorkerTarget = Callable[[Settings, Snapshot | None], int]
"""What a forked worker runs: its settings and the live config to start with; returns the exit code."""


class Supervisor:
    """The parent of a multi-process sidecar: forks, watches and restarts its workers."""

    def __init__(
        self,
        settings: Settings,
        control_dir: Path,
        *,
        logs: LogQueue | None = None,
        target: WorkerTarget = worker_process,
    ) -> None:
        self.settings = settings
        self.control_dir = control_dir
        self.logs = logs
        self.target = target
        self.processes: list[WorkerProcess | None] = [None] * settings.workers
        self.started_at = [0.0] * settings.workers
        self.deaths = [0] * settings.workers
        """Deaths in a row of each worker (reset once it stays up for `RESTART_STABLE_SECONDS`)."""
        self.restart_at: list[float | None] = [None] * settings.workers
        """When a dead worker is due to be started again; None while it runs."""

    def worker_settings(self, index: int) -> Settings:
        """A worker's settings: the parent's, with its identity; no config file (it gets the parent's
        live config at the fork, and the parent watches the file)."""
        return replace(self.settings, worker_index=index, control_dir=self.control_dir, config_file=None)

    def start(self, index: int, live: Snapshot | None = None) -> None:
        """Fork worker `index`, starting from `live`: the config the parent runs now, not the mounted
        bootstrap file, which can be older than the last push (a worker must never serve a config the
        pod has already moved past, even briefly)."""
        with contextlib.suppress(FileNotFoundError):
            worker_socket(self.control_dir, index).unlink()
        settings, target = self.worker_settings(index), self.target
        self.processes[index] = fork(lambda: target(settings, live), self.logs)
        self.started_at[index] = time.monotonic()
        self.restart_at[index] = None

    def note_death(self, index: int, now: float) -> float:
        """Schedule the restart of dead worker `index` with exponential backoff; log why it died.
        Returns the delay."""
        process = self.processes[index]
        code = process.returncode if process is not None else None
        uptime = now - self.started_at[index]
        if uptime >= RESTART_STABLE_SECONDS:
            self.deaths[index] = 0
        delay = min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2.0 ** self.deaths[index])
        self.deaths[index] += 1
        self.restart_at[index] = now + delay
        log.error(
            "worker %d (pid %s) %s after %.1f s up; restarting it in %.1f s (death %d in a row)",
            index, process.pid if process else "-", describe_exit(code), uptime, delay, self.deaths[index],
        )  # fmt: skip
        return delay

    async def wait_ready(self, index: int) -> bool:
        """Wait until worker `index` listens on its control socket."""
        deadline = time.monotonic() + WORKER_START_SECONDS
        path = worker_socket(self.control_dir, index)
        while time.monotonic() < deadline:
            process = self.processes[index]
            if process is None or process.poll() is not None:
                return False
            if path.exists():
                return True
            await asyncio.sleep(0.005)
        return False

    def dead(self) -> list[int]:
        """Workers that exited."""
        return [i for i, p in enumerate(self.processes) if p is None or p.poll() is not None]

    def stop(self) -> None:
        """SIGTERM every worker and wait for them."""
        for process in self.processes:
            if process is not None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(timeout=10)
                except TimeoutError:
                    process.kill()
                    process.wait(timeout=10)


async def supervise(supervisor: Supervisor, fleet: WorkerFleet) -> None:
    """Restart dead workers with backoff, give each restarted one the current config, and catch up
    workers that were unreachable when a config went out."""
    while True:
        wait = SUPERVISE_SECONDS if fleet.stale else SUPERVISE_IDLE_SECONDS
        dues = [due for due in supervisor.restart_at if due is not None]
        if dues:  # a restart is due then: no sooner, so a crash loop's 30 s backoff costs no polling
            wait = min(wait, max(0.0, min(dues) - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.wake.wait(), wait)
        fleet.wake.clear()  # before the round: a wake while it runs makes the next wait return at once
        now = time.monotonic()
        for index in supervisor.dead():
            due = supervisor.restart_at[index]
            if due is None:
                supervisor.note_death(index, now)
            elif now >= due:
                live = fleet.store.current
                supervisor.start(index, live)
                fleet.stale.add(index)  # until it is known to run the current config
                if await supervisor.wait_ready(index):
                    await fleet.bring_up(index, running=live)
                # a worker that did not come up is seen dead on the next round and backs off further
        for index in sorted(fleet.stale):
            if index not in supervisor.dead():
                await fleet.bring_up(index)


def describe_exit(code: int | None) -> str:
    """`killed by SIGKILL`, `exited with code 1`: why a worker process ended."""
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


async def watch_config_file(fleet: WorkerFleet, path: Path, interval: float) -> None:
    """Poll the config file and fan changes out."""
    while True:
        await asyncio.sleep(interval)
        await fleet.sync_file(path)


def share_modules(live: Snapshot | None) -> None:
    """Import in the parent, before it forks, the modules a worker would import on first use for the
    config it starts with, so that the workers share their pages instead of each loading a copy: the
    contract's stats models (the parent merges the workers' `/stats` documents, which they build with
    them), and for a config with fleet limits their modules."""
    import modelroute_contract.stats  # noqa: F401

    if live is not None and needs_fleet(live.config):
        from . import fleetstore  # noqa: F401


async def run_parent(settings: Settings, logs: LogQueue | None = None) -> None:
    """Fork the workers, then serve the admin port and keep the workers in line."""
    import shutil  # the parent's only: a single-process sidecar saves the modules
    import tempfile

    control_dir = Path(tempfile.mkdtemp(prefix="modelroute-sidecar-"))
    os.chmod(control_dir, 0o700)  # the control sockets take configs without a token
    TenantTable.create(control_dir / TENANT_TABLE_FILE)  # before any worker: they share its buckets
    supervisor = Supervisor(settings, control_dir, logs=logs)
    store = ConfigStore(
        region=settings.region,
        namespace=settings.namespace,
        sidecar_ports=tuple(p for p in (settings.port, settings.admin_port) if p),  # 0: not listening
    )
    if settings.config_file is not None:
        store.load_file(settings.config_file)
    share_modules(store.current)
    sockets = WorkerSockets(control_dir, settings.workers)
    fleet = WorkerFleet(store, sockets, settings.pod_name)
    tasks: list[asyncio.Task[None]] = []
    admin: DataServer | None = None
    try:
        for index in range(settings.workers):
            supervisor.start(index, store.current)  # each starts with the config validated here
        for index in range(settings.workers):
            if not await supervisor.wait_ready(index):
                raise SystemExit(f"worker {index} did not start")
        if settings.admin_port:
            admin = admin_server(fleet, admin_token(settings))
            await admin.start(settings.admin_host, settings.admin_port)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers here: it polls
            asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, fleet.wake.set)
        tasks.append(asyncio.create_task(supervise(supervisor, fleet), name="worker-supervisor"))
        if settings.config_file is not None:
            tasks.append(
                asyncio.create_task(
                    watch_config_file(fleet, settings.config_file, settings.config_poll_seconds),
                    name="config-file-watch",
                )
            )
        for task in tasks:
            task.add_done_callback(report_failure)
        log.info("sidecar parent: %d workers on %s:%d", settings.workers, settings.host, settings.port)
        await wait_for_stop()
    finally:
        for task in tasks:
            task.cancel()
        if admin is not None:
            await admin.close(ADMIN_GRACE_SECONDS)
        await sockets.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # the workers' exits wake nothing now
            asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
        supervisor.stop()
        shutil.rmtree(control_dir, ignore_errors=True)


LOG_QUEUE_RECORDS = 10_000
"""Log records waiting for the log writer thread at most; more are dropped (and counted)."""


class LogQueue(logging.Handler):
    """Formats log records where they are logged and hands the lines to the writer thread; drops and
    counts them when it fell behind, so that logging never blocks the event loop and never grows
    memory without bound. (A plain Handler: `logging.handlers.QueueHandler` would bring that module
    and pickle into every process, and copies each record.)"""

    def __init__(self, lines: queue.Queue[str | None], stream: TextIO) -> None:
        super().__init__()
        self.lines = lines
        self.stream = stream
        self.dropped = 0
        self.owner = os.getpid()
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def start_writer(self) -> None:
        """Start the thread that writes the queued lines (again, after `stop_writer`)."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
            self._writer.start()

    def stop_writer(self) -> None:
        """Write what is queued and stop the writer thread, waiting at most about a second (also run
        at exit, and around a fork: lines logged meanwhile wait in the queue)."""
        writer, self._writer = self._writer, None
        if writer is None or self.owner != os.getpid():
            return
        with contextlib.suppress(queue.Full):
            self.lines.put(None, timeout=1.0)
        writer.join(1.0)

    def _write_forever(self) -> None:
        lines, stream = self.lines, self.stream
        while (line := lines.get()) is not None:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr: nothing to tell it with
                pass


class JsonLines(logging.Formatter):
    """One JSON object per line, with the keys the operator's JSON logs (Kopf's) use: `timestamp`,
    `severity`, `message`, plus `logger` and, for a failure, `exception`."""

    SEVERITIES = ((logging.DEBUG, "debug"), (logging.INFO, "info"), (logging.WARNING, "warn"),
                  (logging.ERROR, "error"))  # fmt: skip

    def format(self, record: logging.LogRecord) -> str:
        severity = next((name for level, name in self.SEVERITIES if record.levelno <= level), "fatal")
        line: dict[str, str] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": severity,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, stream: TextIO | None = None, log_format: str = "text") -> LogQueue:
    """Log to `stream` (stderr) from a thread: a log line written on the event loop is formatted
    there but written by the thread, so a slow or unread stderr pipe stalls the thread, not the loop.
    What is queued is written at exit (waiting at most a second). `log_format` `json` writes JSON lines."""
    handler = LogQueue(queue.Queue(LOG_QUEUE_RECORDS), stream or sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonLines() if log_format == "json" else text)
    handler.start_writer()
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    atexit.register(handler.stop_writer)
    return handler


def admin_token(settings: Settings) -> AdminToken:
    return AdminToken(settings.admin_token_file, settings.admin_token)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse settings and run the right kind of process."""
    args = list(sys.argv[1:] if argv is None else argv)
    settings = parse_settings(args)
    logs = configure_logging(settings.log_level, log_format=settings.log_format)
    if not settings.admin_token and not settings.admin_token_file and settings.admin_port:
        log.warning("no admin token configured: the admin port refuses every call")
    install_uvloop()
    if settings.workers > 1:
        asyncio.run(run_parent(settings, logs))
    else:
        asyncio.run(run_single(settings))


if __name__ == "__main__":
    main()

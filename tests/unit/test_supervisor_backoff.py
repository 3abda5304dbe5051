"""Worker restarts back off exponentially, bounded, and start from the first delay again after a worker
stayed up; the log line says why the worker ended. Workers are forked: a restarted one starts from the
parent's live config, and a forked child holds none of the parent's sockets."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

from modelroute_contract import RouterConfig
from modelroute_sidecar.configstore import Snapshot, build_snapshot
from modelroute_sidecar.main import (
    RESTART_MAX_SECONDS,
    RESTART_STABLE_SECONDS,
    Supervisor,
    describe_exit,
    fork,
)
from modelroute_sidecar.settings import Settings, parse_settings


def test_backoff_doubles_is_bounded_and_resets_after_a_stable_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(Settings(workers=1), tmp_path)
    dead = fork(lambda: 3)
    assert dead.wait(timeout=30) == 3
    supervisor.processes[0] = dead
    delays = []
    for _ in range(10):
        supervisor.started_at[0] = 100.0
        delays.append(supervisor.note_death(0, now=101.0))  # died 1 s after each start
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == RESTART_MAX_SECONDS and delays[-1] == RESTART_MAX_SECONDS
    supervisor.started_at[0] = 100.0
    assert supervisor.note_death(0, now=100.0 + RESTART_STABLE_SECONDS) == 0.5  # it had stayed up
    assert "exited with code 3" in caplog.text


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(None) == "did not start"


def test_a_child_that_raises_exits_1_and_a_killed_one_says_by_which_signal() -> None:
    def boom() -> int:
        raise RuntimeError("worker bug")

    assert fork(boom).wait(timeout=30) == 1
    sleeper = fork(lambda: os.pause() or 0)
    sleeper.kill()
    assert describe_exit(sleeper.wait(timeout=30)) == "killed by SIGKILL"


def snapshot(sequence: int) -> Snapshot:
    config = RouterConfig(namespace="team-a", sequence=sequence).seal()
    return build_snapshot(config.to_json(), source="push", region="eu-west")


def test_a_restarted_worker_starts_from_the_live_config_not_the_older_bootstrap_file(tmp_path: Path) -> None:
    """The child gets the parent's snapshot at the fork: what it reports is what the parent ran then,
    and it is not told to read the mounted file (which the kubelet updates up to a minute late)."""
    bootstrap = tmp_path / "mounted.json"
    bootstrap.write_text(RouterConfig(namespace="team-a", sequence=4).seal().to_json())
    settings = parse_settings(["--workers", "2", "--config-file", str(bootstrap)], {})

    def report(worker: Settings, live: Snapshot | None) -> int:
        sequence = live.config.sequence if live is not None else "none"
        (tmp_path / f"worker-{worker.worker_index}.txt").write_text(
            f"{sequence} {worker.config_file} {worker.control_dir}"
        )
        return 0

    supervisor = Supervisor(settings, tmp_path, target=report)
    supervisor.start(0)  # no config validated in the parent yet
    supervisor.start(1, snapshot(7))  # a restart after a push moved the pod on to sequence 7
    for index in (0, 1):
        process = supervisor.processes[index]
        assert process is not None and process.wait(timeout=30) == 0
    assert (tmp_path / "worker-0.txt").read_text() == f"none None {tmp_path}"
    assert (tmp_path / "worker-1.txt").read_text() == f"7 None {tmp_path}"


def test_a_forked_child_holds_none_of_the_parents_sockets(tmp_path: Path) -> None:
    """The parent's listening socket (its admin port, say) is closed in the child: once the parent
    closes it, nobody holds the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    inode = os.fstat(listener.fileno()).st_ino
    seen = tmp_path / "child-fds.txt"

    def child() -> int:
        links = []
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
                links.append(os.readlink(f"/proc/self/fd/{name}"))
        seen.write_text("\n".join(links))
        return 0

    try:
        assert fork(child).wait(timeout=30) == 0
    finally:
        listener.close()
    assert f"socket:[{inode}]" not in seen.read_text().splitlines()

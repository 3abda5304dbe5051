"""Worker restarts back off exponentially, bounded, and start from the first delay again after a worker
stayed up; the log line says why the worker ended."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelroute_sidecar.main import (
    RESTART_MAX_SECONDS,
    RESTART_STABLE_SECONDS,
    Supervisor,
    describe_exit,
)
from modelroute_sidecar.settings import Settings, parse_settings


def test_backoff_doubles_is_bounded_and_resets_after_a_stable_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(Settings(workers=1), [], tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
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


class _Started:
    """Stands in for subprocess.Popen: records the command a worker would be started with."""

    commands: list[list[str]] = []

    def __init__(self, command: list[str]) -> None:
        self.commands.append(command)


def test_a_restarted_worker_boots_from_the_live_config_not_the_older_bootstrap_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = tmp_path / "mounted.json"
    bootstrap.write_text('{"sequence": 4}')
    argv = ["--workers", "2", "--config-file", str(bootstrap)]
    supervisor = Supervisor(parse_settings(argv, {}), argv, tmp_path)
    monkeypatch.setattr(subprocess, "Popen", _Started)
    _Started.commands.clear()

    supervisor.start(0)  # first start: the parent has only the bootstrap file itself
    supervisor.start(1, live_config='{"sequence": 7}')  # a restart after a push moved the pod on

    first, restarted = (parse_settings(c[3:], {}) for c in _Started.commands)
    assert first.config_file == bootstrap
    assert restarted.config_file is not None and restarted.config_file.parent == tmp_path
    assert restarted.config_file.read_text() == '{"sequence": 7}'
    assert restarted.worker_index == 1 and restarted.control_dir == tmp_path

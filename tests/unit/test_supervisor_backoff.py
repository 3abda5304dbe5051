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
from modelroute_sidecar.settings import Settings


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

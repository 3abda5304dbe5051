"""The data port's limits as settings: defaults, environment, flags over environment, and refusals of
limits that contradict each other."""

from __future__ import annotations

import pytest

from modelroute_sidecar.settings import parse_settings


def test_defaults_are_sane() -> None:
    settings = parse_settings([], {})
    assert (settings.max_line_bytes, settings.max_head_bytes) == (8192, 65536)
    assert (settings.head_timeout_seconds, settings.body_timeout_seconds) == (10.0, 30.0)
    assert settings.max_connections == 4096


def test_environment_then_flags() -> None:
    env = {
        "MODELROUTE_MAX_LINE_BYTES": "1024",
        "MODELROUTE_MAX_HEAD_BYTES": "4096",
        "MODELROUTE_HEAD_TIMEOUT_SECONDS": "2.5",
        "MODELROUTE_BODY_TIMEOUT_SECONDS": "7",
        "MODELROUTE_MAX_CONNECTIONS": "100",
    }
    settings = parse_settings(["--max-connections", "50", "--head-timeout-seconds", "1"], env)
    assert (settings.max_line_bytes, settings.max_head_bytes) == (1024, 4096)
    assert (settings.head_timeout_seconds, settings.body_timeout_seconds) == (1.0, 7.0)
    assert settings.max_connections == 50


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--max-line-bytes", "70000"], "--max-line-bytes"),
        (["--max-line-bytes", "0"], "--max-line-bytes"),
        (["--max-connections", "0"], "--max-connections"),
    ],
)
def test_contradictory_limits_are_refused(argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit, match=says):
        parse_settings(argv, {})

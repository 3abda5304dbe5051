"""The bounded chaos run of `bench/chaos.py`, shortened to 60 s of traffic: mixed public and EU personal
requests (with the adversarial encodings of issue #12) through a real 2-worker sidecar while its
regional upstreams are killed, hung, slowed, made to answer 500, cut streams and drop connections after
reading a POST, configs are pushed and a worker is SIGKILLed. The promises of the README must hold.

Runs the bench as its own process (its own event loop, its own sidecar and fakes) and reads the figures
from its last output line; the full output is in the assertion message when a figure is not zero."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.kube_harness import REPO

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(240)]

SECONDS = 60


def test_promises_hold_under_chaos() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--seconds", str(SECONDS), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    output = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), output
    figures = json.loads(lines[-1])
    assert figures["requests_sent"] >= SECONDS * 10, output  # the load really ran
    assert figures["worker_kills"] == 1, output
    assert figures["marker_mismatches"] == 0, output  # the recording itself is consistent
    assert all(status == 200 for _, _, status in figures["pushes"]), output
    assert {
        key: figures[key]
        for key in (
            "residency_violations",
            "client_errors_while_compliant_up",
            "duplicate_posts",
            "streams_cut_without_error",
        )
    } == {
        "residency_violations": 0,
        "client_errors_while_compliant_up": 0,
        "duplicate_posts": 0,
        "streams_cut_without_error": 0,
    }, output

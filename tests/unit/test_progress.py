"""CLI progress: transient steps on a terminal only, waits logged once per change, nothing on stdout,
and kubectl-style durations."""

from __future__ import annotations

import io
import itertools

import pytest
from tests.kube_harness import REPO

from modelroute_operator.logic.progress import Progress, parse_duration
from modelroute_operator.runtime import cli

ERASE = "\r\x1b[K"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_shows_steps_in_place_and_erases_them() -> None:
    term = Terminal()
    progress = Progress(term)
    progress.step("reading")
    progress.step("compiling 1/2")
    progress.done()
    assert term.getvalue() == f"{ERASE}reading{ERASE}compiling 1/2{ERASE}"
    progress.done()  # nothing shown: nothing to erase
    assert term.getvalue().count(ERASE) == 3


def test_a_log_gets_no_steps_and_one_line_per_change_of_a_wait() -> None:
    log = io.StringIO()
    ticks = itertools.count(0.0, 1.5)
    progress = Progress(log, clock=lambda: next(ticks))
    progress.step("reading")
    for state in ("2/3 synced", "2/3 synced", "3/3 synced"):
        progress.waiting(state)
    progress.done()
    assert log.getvalue() == "[  1.5s] 2/3 synced\n[  4.5s] 3/3 synced\n"


def test_terminal_wait_is_rewritten_with_the_time_waited() -> None:
    term = Terminal()
    ticks = itertools.count(0.0, 2.0)
    progress = Progress(term, clock=lambda: next(ticks))
    progress.waiting("2/3 synced")
    progress.waiting("2/3 synced")
    assert term.getvalue() == f"{ERASE}[  2.0s] 2/3 synced{ERASE}[  4.0s] 2/3 synced"


def test_disabled_progress_writes_nothing() -> None:
    term = Terminal()
    progress = Progress(term, enabled=False)
    progress.step("reading")
    progress.waiting("2/3 synced")
    progress.done()
    assert term.getvalue() == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0), ("0.5s", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "s", "soon", "1d", "-1s", "1s2m"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_render_on_a_terminal_shows_progress_on_stderr_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = str(REPO / "examples" / "multi-region-eu-residency")
    assert cli.main(["render", "-f", example, "-n", "team-a"]) == cli.EXIT_OK
    plain = capsys.readouterr()
    assert plain.err == ""  # not a terminal: no progress at all

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert cli.main(["render", "-f", example, "-n", "team-a"]) == cli.EXIT_OK
    assert capsys.readouterr().out == plain.out  # the result does not change
    shown = term.getvalue()
    assert f"{ERASE}reading {example}..." in shown
    assert f"{ERASE}compiling namespace team-a (1/1)" in shown
    assert shown.endswith(ERASE)  # erased: the terminal ends with the result alone

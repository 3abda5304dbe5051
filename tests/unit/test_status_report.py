"""`modelroute status`, offline: object health by kind, each sidecar pod's sync state from what the
policies report, the namespace verdict and exit code, the tables, JSON, and the CLI wiring (with the
cluster read replaced, so no API server is needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelroute_operator.logic.status_report import (
    Assessment,
    Health,
    PodSync,
    Report,
    Snapshot,
    build_report,
    format_report,
    live_versions,
    object_health,
    pod_ready,
    render_table,
    report_json,
    waiting_on,
)
from modelroute_operator.runtime import cli

NS = "team-a"
V = "0123456789abcdef"


def ready(status: str = "True", reason: str = "Live", message: str = "m") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


def endpoint(name: str = "llama", cond: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "kind": "ModelEndpoint",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {},
        "status": {
            "observedGeneration": 1,
            "conditions": [cond or ready()],
            "readySummary": "2/2",
            "regions": "eu=2/2",
        }
        | status,
    }


def policy(
    sync: str | None = "2/2",
    lagging: list[str] | None = None,
    version: str = V,
    name: str = "support",
    counted: str | None = V,
    skewed: list[str] | None = None,
) -> dict[str, Any]:
    """A live policy; `counted` is the version its sync figure counts (`syncedVersion`)."""
    status: dict[str, Any] = {"observedGeneration": 1, "conditions": [ready()], "configVersion": version}
    if sync is not None:
        status |= {"sync": sync, "laggingPods": lagging or []}
        if skewed:
            status["skewedPods"] = [{"pods": skewed, "reads": [1], "reason": "reads schema 1; ..."}]
        if counted is not None:
            status["syncedVersion"] = counted
    return {
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "status": status,
    }


def canary(phase: str, weight: int = 10, step: int = 0) -> dict[str, Any]:
    return {
        "kind": "Canary",
        "metadata": {"name": "next", "namespace": NS, "generation": 1},
        "spec": {"stable": "v1", "candidate": "v2", "steps": [{"weight": 10}, {"weight": 50}]},
        "status": {
            "observedGeneration": 1,
            "conditions": [ready()],
            "phase": phase,
            "currentStep": step,
            "currentWeight": weight,
            "history": [{"message": "failed analysis"}],
        },
    }


def pod(
    name: str, is_ready: bool = True, ip: str | None = "10.0.0.1", deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def configmap(namespace: str = NS, version: str = V) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "modelroute-router-config",
            "namespace": namespace,
            "annotations": {"modelroute.dev/config-version": f"sha256:{version}"},
        }
    }


# ---------------------------------------------------------------------------------- object health


@pytest.mark.parametrize(
    ("body", "health", "message"),
    [
        (endpoint(), Health.HEALTHY, "2/2 replicas ready (eu=2/2)"),
        (
            endpoint(replicas=[{"name": "a", "health": "Unhealthy"}, {"name": "b", "health": "Healthy"}]),
            Health.HEALTHY,
            "2/2 replicas ready (eu=2/2); unhealthy: a",
        ),
        (
            endpoint(cond=ready("False", "Unavailable", "every replica is unhealthy")),
            Health.DEGRADED,
            "Unavailable: every replica is unhealthy",
        ),
        (
            endpoint(cond=ready("False", "Invalid", "spec.replicas: bad")),
            Health.DEGRADED,
            "Invalid: spec.replicas: bad",
        ),
        (endpoint(cond=ready("False", "Blocked", "b")), Health.PROGRESSING, "Blocked: b"),
        (endpoint(cond=ready("Unknown", "Pending", "p")), Health.PROGRESSING, "Pending: p"),
        (
            endpoint(observedGeneration=0),
            Health.PROGRESSING,
            "waiting for the modelroute operator to observe generation 1",
        ),
        (policy(), Health.HEALTHY, "live; 2/2 sidecars synced"),
        (policy(sync="1/2", lagging=["app-1"]), Health.PROGRESSING, "1/2 sidecars synced; lagging: app-1"),
        (policy(sync=None), Health.PROGRESSING, "live; waiting for the sidecar sync figure"),
        (
            policy(counted="old"),
            Health.PROGRESSING,
            "live; waiting for the sidecars to be counted on this config",
        ),
        (policy(counted=None), Health.HEALTHY, "live; 2/2 sidecars synced"),
        (canary("Pending"), Health.PROGRESSING, "waiting for the canary controller to start"),
        (canary("Progressing", weight=50, step=1), Health.PROGRESSING, "step 2/2: 50% to v2"),
        (canary("Paused"), Health.SUSPENDED, "paused at step 1/2: 10% to v2"),
        (
            canary("Promoted", weight=100),
            Health.HEALTHY,
            "promoted: 100% to v2; name it stable in the RoutingPolicy",
        ),
        (canary("RolledBack", weight=0), Health.DEGRADED, "rolled back to v1: failed analysis"),
    ],
)
def test_object_health(body: dict[str, Any], health: Health, message: str) -> None:
    assert object_health(body) == Assessment(health, message)


def test_object_health_refuses_other_kinds() -> None:
    with pytest.raises(ValueError, match="not a modelroute kind"):
        object_health({"kind": "Deployment"})


# ---------------------------------------------------------------------------------------- pods


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (pod("a"), True),
        (pod("a", is_ready=False), False),
        (pod("a", ip=None), False),
        (pod("a", deleting=True), False),
        ({"metadata": {"name": "a"}}, False),
    ],
)
def test_pod_ready(body: dict[str, Any], expected: bool) -> None:
    assert pod_ready(body) is expected


S, T, U, N, C = PodSync.SYNCED, PodSync.STALE, PodSync.UNKNOWN, PodSync.NOT_READY, PodSync.NO_CONFIG

POD_CASES = [
    # (id, policies, pods, configmap present, expected sync by pod, namespace state)
    ("all synced", [policy("2/2")], [pod("a"), pod("b")], True, {"a": S, "b": S}, "OK"),
    ("one lagging", [policy("1/2", ["b"])], [pod("a"), pod("b")], True, {"a": S, "b": T}, "NOT SYNCED"),
    (
        "one skewed",
        [policy("1/2", ["b"], skewed=["b"])],
        [pod("a"), pod("b")],
        True,
        {"a": S, "b": PodSync.SKEWED},
        "NOT SYNCED",
    ),
    (
        "not ready does not count",
        [policy("1/1")],
        [pod("a"), pod("b", is_ready=False)],
        True,
        {"a": S, "b": N},
        "OK",
    ),
    ("no config", [], [pod("a")], False, {"a": C}, "NOT SYNCED"),
    ("no policy reports sync", [], [pod("a")], True, {"a": U}, "NOT SYNCED"),
    (
        "figure predates a new pod",
        [policy("1/1")],
        [pod("a"), pod("b")],
        True,
        {"a": U, "b": U},
        "NOT SYNCED",
    ),
    ("figure of an older version", [policy("1/1", counted="old")], [pod("a")], True, {"a": U}, "NOT SYNCED"),
    ("figure without syncedVersion", [policy("1/1", counted=None)], [pod("a")], True, {"a": S}, "OK"),
    (
        "old operator, older version",
        [policy("1/1", version="old", counted=None)],
        [pod("a")],
        True,
        {"a": U},
        "NOT SYNCED",
    ),
    # Two lagging, one listed (the operator lists at most 64): the unlisted one is not called synced.
    (
        "lagging list truncated",
        [policy("0/2", ["a"])],
        [pod("a"), pod("b")],
        True,
        {"a": T, "b": U},
        "NOT SYNCED",
    ),
    (
        "lagging in one of two policies",
        [policy("1/2", ["b"]), policy("2/2", name="other")],
        [pod("a"), pod("b")],
        True,
        {"a": S, "b": T},
        "NOT SYNCED",
    ),
    ("malformed figure", [policy("x/y")], [pod("a")], True, {"a": U}, "NOT SYNCED"),
]


@pytest.mark.parametrize(
    ("policies", "pods", "has_config", "expected", "state"),
    [c[1:] for c in POD_CASES],
    ids=[c[0] for c in POD_CASES],
)
def test_pod_sync(
    policies: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    has_config: bool,
    expected: dict[str, PodSync],
    state: str,
) -> None:
    report = build_report(
        Snapshot(objects=policies, pods=pods, configmaps=[configmap()] if has_config else [])
    )
    assert {p.pod: p.sync for p in report.pods} == expected
    assert {p.pod: p.version for p in report.pods} == {
        name: (V if sync == S else "") for name, sync in expected.items()
    }
    assert [ns.state for ns in report.namespaces] == [state]
    assert report.ok is (state == "OK")


NAMESPACE_CASES = [
    ("healthy", [endpoint(), policy("0/0")], "OK"),
    (
        "degraded wins",
        [endpoint(cond=ready("False", "Invalid")), canary("Paused"), policy("0/0")],
        "DEGRADED",
    ),
    ("progressing", [canary("Progressing"), policy("0/0")], "PROGRESSING"),
    ("suspended is not ok", [canary("Paused"), policy("0/0")], "SUSPENDED"),
    ("unknown phase", [canary("Exploded"), policy("0/0")], "UNKNOWN"),
    ("promoted", [canary("Promoted"), policy("0/0")], "OK"),
]


@pytest.mark.parametrize(
    ("objects", "state"), [c[1:] for c in NAMESPACE_CASES], ids=[c[0] for c in NAMESPACE_CASES]
)
def test_namespace_state(objects: list[dict[str, Any]], state: str) -> None:
    report = build_report(Snapshot(objects=objects, configmaps=[configmap()]))
    assert [ns.state for ns in report.namespaces] == [state]
    assert report.ok is (state == "OK")


def test_report_is_sorted_and_spans_namespaces() -> None:
    other = {**policy("0/0"), "metadata": {"name": "p", "namespace": "a-first", "generation": 1}}
    report = build_report(
        Snapshot(
            objects=[canary("Promoted"), policy("1/1"), endpoint("zeta"), endpoint("alpha"), other],
            pods=[pod("b")],
            configmaps=[configmap(), configmap("a-first")],
        )
    )
    assert [ns.namespace for ns in report.namespaces] == ["a-first", NS]
    assert [(o.namespace, o.kind, o.name) for o in report.objects] == [
        ("a-first", "RoutingPolicy", "p"),
        (NS, "ModelEndpoint", "alpha"),
        (NS, "ModelEndpoint", "zeta"),
        (NS, "RoutingPolicy", "support"),
        (NS, "Canary", "next"),
    ]
    summary = report.namespaces[1]
    assert (summary.sidecars_synced, summary.sidecars_ready, summary.sidecars_total) == (1, 1, 1)
    assert (summary.objects_healthy, summary.objects_total) == (4, 4)


def test_live_versions_read_the_annotation() -> None:
    assert live_versions([configmap(), {"metadata": {"name": "x", "namespace": "n"}}]) == {NS: V}


# -------------------------------------------------------------------------------------------- output


def test_table_output() -> None:
    report = build_report(
        Snapshot(
            objects=[policy("1/2", ["app-1"])],
            pods=[pod("app-0"), pod("app-1"), pod("app-2", is_ready=False)],
            configmaps=[configmap()],
        )
    )
    assert format_report(report) == "\n".join(
        [
            "NAMESPACE   POD     READY   VERSION            SYNCED",
            "team-a      app-0   True    0123456789abcdef   SYNCED",
            "team-a      app-1   True    -                  STALE",
            "team-a      app-2   False   -                  NOT READY",
            "",
            "NAMESPACE   KIND            NAME      HEALTH        MESSAGE",
            "team-a      RoutingPolicy   support   Progressing   1/2 sidecars synced; lagging: app-1",
            "",
            "NAMESPACE   CONFIG             SIDECARS                   OBJECTS       STATUS",
            "team-a      0123456789abcdef   1/2 synced (1 not ready)   0/1 healthy   NOT SYNCED",
        ]
    )


def test_table_output_of_nothing() -> None:
    assert format_report(Report()) == "no modelroute objects, configs or sidecar pods found"
    assert Report().ok


def test_long_messages_are_cut_in_tables_only() -> None:
    long = endpoint(cond=ready("False", "Invalid", "x" * 300 + "\nmore"))
    report = build_report(Snapshot(objects=[long]))
    line = format_report(report).splitlines()[1]
    assert line.endswith("...") and len(line.split("Degraded", 1)[1].strip()) == 100
    assert report_json(report)["objects"][0]["message"].endswith("\nmore")


def test_render_table_pads_all_but_the_last_column() -> None:
    assert render_table([("A", "BB", "C"), ("aaa", "b", "")]) == "A     BB   C\naaa   b"


def test_json_output() -> None:
    report = build_report(Snapshot(objects=[policy("1/1")], pods=[pod("app-0")], configmaps=[configmap()]))
    doc = json.loads(json.dumps(report_json(report)))
    assert doc["ok"] is True
    assert doc["pods"] == [{"namespace": NS, "pod": "app-0", "ready": True, "version": V, "sync": "SYNCED"}]
    assert doc["objects"][0]["health"] == "Healthy"
    assert doc["namespaces"][0]["state"] == "OK" and doc["namespaces"][0]["ok"] is True


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_keeps_every_subcommand() -> None:
    parser = cli.build_parser()
    for argv in (
        ["render", "-f", "x"],
        ["validate", "-f", "x"],
        ["explain", "-f", "x", "--request", "r"],
        ["crds", "--check", "d"],
    ):
        assert parser.parse_args(argv).command == argv[0]
    args = parser.parse_args(["status", "-n", "team-a", "-o", "json"])
    assert (args.namespace, args.output, args.run) == ("team-a", "json", cli.status)
    assert parser.parse_args(["status"]).namespace is None


@pytest.mark.parametrize(
    ("snapshot", "code", "text"),
    [
        (Snapshot(objects=[policy("1/1")], pods=[pod("app-0")], configmaps=[configmap()]), 0, "SYNCED"),
        (
            Snapshot(objects=[policy("0/1", ["app-0"])], pods=[pod("app-0")], configmaps=[configmap()]),
            1,
            "STALE",
        ),
        (Snapshot(), 0, "no modelroute objects"),
    ],
)
def test_cli_status_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    snapshot: Snapshot,
    code: int,
    text: str,
) -> None:
    seen: list[str | None] = []

    def read(namespace: str | None, *cluster: str | None) -> Snapshot:
        seen.append(namespace)
        return snapshot

    monkeypatch.setattr(cli, "_read_cluster", read)
    assert cli.main(["status", "-n", NS]) == code
    assert text in capsys.readouterr().out
    assert seen == [NS]


def test_cli_status_without_a_cluster(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(namespace: str | None, *cluster: str | None) -> Snapshot:
        raise ConnectionRefusedError("nobody home")

    monkeypatch.setattr(cli, "_read_cluster", fail)
    assert cli.main(["status"]) == cli.EXIT_USAGE
    assert "cannot read the cluster: ConnectionRefusedError: nobody home" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ status --wait

SYNCED = Snapshot(objects=[policy("1/1")], pods=[pod("app-0")], configmaps=[configmap()])
STALE = Snapshot(objects=[policy("0/1", ["app-0"])], pods=[pod("app-0")], configmaps=[configmap()])


def test_waiting_on_names_what_blocks_each_namespace() -> None:
    assert waiting_on(build_report(SYNCED)) == "every sidecar synced and every object healthy"
    stale = waiting_on(build_report(STALE))
    assert stale == (
        "waiting on 1 of 1 namespace(s): team-a NOT SYNCED "
        "(pod app-0 STALE, RoutingPolicy support Progressing)"
    )
    many = Snapshot(
        objects=[endpoint(f"e{i}", ready("False", "Unavailable")) for i in range(5)], configmaps=[configmap()]
    )
    assert waiting_on(build_report(many)).endswith("ModelEndpoint e2 Degraded, +2 more)")


def scripted_cluster(monkeypatch: pytest.MonkeyPatch, *answers: Snapshot | Exception) -> list[str | None]:
    """Replace the cluster read with answers in turn (the last one repeats); no pause between polls."""
    calls: list[str | None] = []

    def read(namespace: str | None, *cluster: str | None) -> Snapshot:
        answer = answers[min(len(calls), len(answers) - 1)]
        calls.append(namespace)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(cli, "_read_cluster", read)
    monkeypatch.setattr(cli, "WAIT_POLL_SECONDS", 0.0)
    return calls


def test_status_wait_polls_until_synced_and_logs_each_change(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = scripted_cluster(monkeypatch, STALE, STALE, ConnectionResetError("blip"), SYNCED)
    assert cli.main(["status", "-n", NS, "--wait", "--timeout", "1m"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert len(calls) == 4
    assert "SYNCED" in out and "STALE" not in out  # stdout: only the final report
    progress = err.splitlines()
    assert len(progress) == 2, err  # not a TTY: one line per change, the repeated state once
    assert progress[0].endswith("team-a NOT SYNCED (pod app-0 STALE, RoutingPolicy support Progressing)")
    assert progress[1].endswith("cannot read the cluster: ConnectionResetError")
    assert progress[0].startswith("[") and "s] waiting on" in progress[0]


def test_status_wait_times_out_with_the_last_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted_cluster(monkeypatch, STALE)
    assert cli.main(["status", "-n", NS, "--wait", "--timeout", "0.05s"]) == cli.EXIT_INVALID
    out, err = capsys.readouterr()
    assert "STALE" in out
    assert "error: timed out after 0.05s waiting on 1 of 1 namespace(s): team-a NOT SYNCED" in err


def test_status_wait_fails_at_once_when_the_first_read_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = scripted_cluster(monkeypatch, ConnectionRefusedError("nobody home"), SYNCED)
    assert cli.main(["status", "--wait"]) == cli.EXIT_USAGE
    assert calls == [None]
    assert "cannot read the cluster: ConnectionRefusedError" in capsys.readouterr().err


def test_quiet_status_wait_prints_no_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted_cluster(monkeypatch, STALE, SYNCED)
    assert cli.main(["status", "-q", "--wait"]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", ["", "soon", "5x", "m", "-3s"])
def test_status_timeout_must_be_a_duration(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--wait", f"--timeout={bad}"])
    assert exited.value.code == 2
    assert f"argument --timeout: invalid duration {bad!r}: expected e.g. 90s" in capsys.readouterr().err

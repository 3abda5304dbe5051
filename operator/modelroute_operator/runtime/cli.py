"""The `modelroute` command: offline tools over manifests, for people and CI.

- `render -f DIR`: compile manifests to the RouterConfig the operator would store (for CI diffs);
  `--schema N`: the document a sidecar of schema N is sent, or why it cannot be.
- `validate -f DIR`: our schemas and cross-object checks; exit 0 when valid, 1 when not, 2 on usage.
- `explain -f DIR --request FILE`: which endpoint a request would go to, and why each candidate was dropped.
- `crds --write DIR | --check DIR`: generate the CRDs from the models, or check them for drift.
- `status [-n NS] [--wait [--timeout 5m]]`: sync and health across namespaces from the cluster
  (KUBECONFIG), like `istioctl proxy-status`; exit 0 when every sidecar is synced and every object
  healthy, 1 otherwise. `--wait` polls until then, saying on stderr what it is still waiting on.
- `canary pause|resume|promote|abort NAME [-n NS]`: act on a running Canary. The action is written to
  `status.manual` through the status subresource, never to the spec, so a GitOps tool that owns the spec
  neither shows drift nor reverts it (the idea of Argo Rollouts' `promote`/`abort`, which also write
  status); the operator obeys it at its next look, as it obeys `spec.paused`/`promote`/`abort`.

Installed twice: as `modelroute` and as `kubectl-modelroute`, so `kubectl modelroute ...` runs it as a
kubectl plugin. `--context` and `--kubeconfig` pick the cluster (kubectl does not pass its own flags to a
plugin); `--version` prints the version.

Results go to stdout; progress goes to stderr (see `progress`), and `-q` silences it.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelroute_contract import ACCEPTED_SCHEMA_VERSIONS, RouterConfig, SchemaGap
from modelroute_operator.logic import crdgen, status_report
from modelroute_operator.logic.compiler import CompileResult, compile_namespace
from modelroute_operator.logic.manifests import Manifests, load_manifests
from modelroute_operator.logic.progress import Progress, parse_duration

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _load(args: argparse.Namespace) -> Manifests:
    args.progress.step(f"reading {', '.join(args.filename)}...")
    return load_manifests(args.filename, namespace=args.namespace, recursive=args.recursive)


def _compile_all(
    args: argparse.Namespace, manifests: Manifests, config_maps: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, CompileResult]:
    progress: Progress = args.progress
    namespaces = manifests.namespaces()
    results = {}
    for index, ns in enumerate(namespaces, 1):
        progress.step(f"compiling namespace {ns} ({index}/{len(namespaces)})")
        objects = manifests.for_namespace(ns)
        if config_maps:
            objects = dataclasses.replace(objects, config_maps=config_maps)
        results[ns] = compile_namespace(objects)
    progress.done()
    return results


def _report_errors(manifests: Manifests, results: dict[str, CompileResult]) -> int:
    """Print every error to stderr, one per line; return how many there were."""
    lines = [str(e) for e in manifests.errors]
    lines += [f"{ns}: {e}" for ns, result in results.items() for e in result.errors]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return len(lines)


def render(args: argparse.Namespace) -> int:
    manifests = _load(args)
    results = _compile_all(args, manifests)
    if _report_errors(manifests, results):
        return EXIT_INVALID
    configs = [r.config for r in results.values() if r.config]
    documents: list[Any] = []
    for config in configs:
        rendered = config.render(args.schema) if args.schema else None
        if isinstance(rendered, SchemaGap):
            reason = f"error: namespace {config.namespace}: a sidecar that {rendered.message()}"
            print(reason, file=sys.stderr)
            return EXIT_INVALID
        documents.append(json.loads(rendered.text) if rendered else config.document())
    document: Any = documents[0] if len(documents) == 1 else documents
    if args.output == "yaml":
        print(yaml.safe_dump(document, sort_keys=True), end="")
    else:
        print(json.dumps(document, indent=2, sort_keys=True))
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    manifests = _load(args)
    results = _compile_all(args, manifests)
    count = _report_errors(manifests, results)
    if count:
        print(f"{count} error(s) in {len(manifests.objects)} object(s)", file=sys.stderr)
        return EXIT_INVALID
    for ns, result in results.items():
        assert result.config is not None
        print(
            f"ok: {ns}: {len(manifests.for_namespace(ns).endpoints)} endpoint(s), "
            f"{len(result.config.policies)} policy(ies), version {result.config.version}"
        )
    return EXIT_OK


def explain(args: argparse.Namespace) -> int:
    # Imported here: the engine is only needed by this subcommand.
    from modelroute_sidecar.engine import Router, extract_features

    manifests = _load(args)
    results = _compile_all(args, manifests, _head_config_maps(args.head, manifests))
    if _report_errors(manifests, results):
        return EXIT_INVALID
    request = json.loads(Path(args.request).read_text())
    headers = {k.lower(): str(v) for k, v in (request.pop("headers", None) or {}).items()}
    body = request.get("body", request)
    config: RouterConfig | None = results[args.namespace].config if args.namespace in results else None
    if config is None:
        print(f"error: no objects in namespace {args.namespace!r}", file=sys.stderr)
        return EXIT_INVALID
    router = Router(config, local_region=args.region, models=_learned_models(config))
    # the request's own id when it names one: shadow sampling hashes it, as the sidecar does
    features = extract_features(body, headers, headers.get("x-request-id") or "explain", args.api)
    pinned = tuple(args.pinned.split("/", 1)) if "/" in args.pinned else None
    decision = router.decide(features, _NoEjections(), seed=args.seed, sessions=_Pinned(pinned))
    print(
        json.dumps(
            _describe(decision, _strategy(config, decision)) | {"shadow": _describe_shadow(config, decision)},
            indent=2,
        )
    )
    return EXIT_OK if decision.error is None else EXIT_INVALID


def _strategy(config: RouterConfig, decision: Any) -> str:
    """The matched rule's strategy (`weighted` or `bandit`); empty when no rule matched."""
    for policy in config.policies:
        if policy.name == decision.policy:
            for rule in policy.rules:
                if rule.name == decision.rule:
                    return str(rule.strategy)
    return ""


def _head_config_maps(heads: list[str], manifests: Manifests) -> dict[str, dict[str, str]]:
    """`--head CONFIGMAP=FILE`: the head file (as `router train` wrote it) stands for that ConfigMap, under
    every key the policies name in it, so the compiler pins it by sha256 as it would in the cluster."""
    keys: dict[str, set[str]] = {}
    for policy in manifests.objects:
        for model in getattr(getattr(policy, "spec", None), "difficulty_models", None) or ():
            if model.config_map is not None:
                keys.setdefault(model.config_map.name, set()).add(model.config_map.key)
    config_maps: dict[str, dict[str, str]] = {}
    for head in heads:
        name, sep, path = head.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--head {head!r}: expected CONFIGMAP=FILE")
        text = Path(path).read_text()
        config_maps[name] = {key: text for key in keys.get(name, ()) or ("head.json",)}
    return config_maps


def _learned_models(config: RouterConfig) -> dict[str, Any]:
    """The learned models of the config's policies, loaded as a sidecar loads them (the builtin model
    from the wheel, heads from the config, semantic vectors): nothing is imported when no rule needs them."""
    from modelroute_sidecar.engine.learned import needs_models

    if not any(needs_models(policy) for policy in config.policies):
        return {}
    try:
        from modelroute_sidecar import embeddings
    except ImportError as exc:
        needs = "explaining learned rules needs the sidecar extra (pip install 'modelroute[sidecar]')"
        raise ValueError(f"{needs}: {exc}") from None
    return embeddings.load_models(config)


class _NoEjections:
    """Offline there is no passive health: nothing is ejected, no latency is known."""

    def is_ejected(self, endpoint: str, replica: str) -> bool:
        return False

    def any_ejected(self) -> bool:
        return False

    def p95_latency_ms(self, endpoint: str) -> float | None:
        return None


class _Pinned:
    """Offline session affinity: every session is pinned to `--pinned`, or new without it."""

    def __init__(self, pinned: tuple[str, ...] | None) -> None:
        self._pinned = (pinned[0], pinned[1]) if pinned is not None else None

    def pinned(self, session: Any) -> tuple[str, str] | None:
        return self._pinned


def _describe(decision: Any, strategy: str = "") -> dict[str, Any]:
    pick = decision.bandit
    return {
        "policy": decision.policy,
        "rule": decision.rule,
        "dataClass": decision.data_class,
        "dataClassSource": decision.data_class_source,
        "dataClasses": list(decision.data_classes),
        "dataClassSignals": [{"source": src, "dataClass": cls} for src, cls in decision.signals],
        "complexity": decision.complexity,
        "complexityScorer": decision.complexity_scorer or None,
        "semanticRoute": decision.semantic_route or None,
        "semanticSimilarity": decision.semantic_similarity if decision.semantic_route else None,
        "canary": decision.canary or None,
        "canarySide": decision.canary_side or None,
        "affinity": None
        if decision.affinity is None
        else {"outcome": decision.affinity.outcome, "reason": decision.affinity.reason},
        "strategy": strategy or None,
        # offline there is no feedback: every arm samples its prior (a sidecar's posteriors are in /stats)
        "bandit": None
        if pick is None
        else {"arm": pick.endpoint, "mode": pick.mode, "sampled": pick.sampled, "score": pick.score},
        "error": None if decision.error is None else _describe_error(decision.error),
        "plan": [_describe_choice(c) | {"role": str(c.role)} for c in decision.plan],
        "escalation": [_describe_choice(c) for c in decision.escalation],
        "dropped": [
            _describe_choice(d) | {"reason": str(d.reason), "detail": d.detail} for d in decision.dropped
        ],
        "notes": list(decision.notes),
    }


def _describe_shadow(config: RouterConfig, decision: Any) -> dict[str, Any] | None:
    """The matched rule's shadow traffic, and what it does with this request: `mirrored` (the request id
    falls within `percent`), then the replica its copy would go to or why it would be skipped."""
    policy = next((p for p in config.policies if p.name == decision.policy), None)
    rule = next((r for r in policy.rules if r.name == decision.rule), None) if policy else None
    if rule is None or rule.shadow is None:
        return None
    pick = decision.shadow
    choice = pick.choice if pick is not None else None
    return {
        "endpoint": rule.shadow.endpoint,
        "percent": rule.shadow.percent,
        "maxConcurrent": rule.shadow.max_concurrent,
        "mirrored": pick is not None,
        "replica": choice.replica if choice is not None else None,
        "region": choice.region if choice is not None else None,
        "skipped": (pick.skipped or None) if pick is not None else None,
    }


def _describe_choice(choice: Any) -> dict[str, Any]:
    return {"endpoint": choice.endpoint, "replica": choice.replica, "region": choice.region}


def _describe_error(error: Any) -> dict[str, Any]:
    return {"status": error.status, "code": error.code, "message": error.message}


def crds(args: argparse.Namespace) -> int:
    argv = ["--write", args.write] if args.write else ["--check", args.check]
    return crdgen.main(argv)


WAIT_POLL_SECONDS = 1.0


def status(args: argparse.Namespace) -> int:
    progress: Progress = args.progress
    deadline = time.monotonic() + args.timeout
    first = True
    while True:
        progress.step("reading the cluster...")
        try:
            report = status_report.build_report(_read_cluster(args.namespace, args.context, args.kubeconfig))
        except Exception as exc:
            # The kubernetes client raises its own types for a missing kubeconfig, refusals and network
            # failures; all mean the same to a CI job: no answer (2), distinct from "not synced" (1).
            # A wait rides out a blip once the first read worked; the first read failing ends it.
            if first or time.monotonic() >= deadline:
                progress.done()
                print(f"error: cannot read the cluster: {type(exc).__name__}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            progress.waiting(f"cannot read the cluster: {type(exc).__name__}")
        else:
            if report.ok or not args.wait or time.monotonic() >= deadline:
                break
            progress.waiting(status_report.waiting_on(report))
        first = False
        time.sleep(max(0.0, min(WAIT_POLL_SECONDS, deadline - time.monotonic())))
    progress.done()
    if args.output == "json":
        print(json.dumps(status_report.report_json(report), indent=2))
    else:
        print(status_report.format_report(report))
    if args.wait and not report.ok:
        print(f"error: timed out after {args.timeout:g}s {status_report.waiting_on(report)}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INVALID


def _read_cluster(
    namespace: str | None, context: str | None = None, kubeconfig: str | None = None
) -> status_report.Snapshot:
    # Imported here: the offline subcommands need neither the client nor a cluster.
    from modelroute_operator.clients.kube import load_client_config, read_status_snapshot

    load_client_config(context, kubeconfig)
    return read_status_snapshot(namespace)


def spend(args: argparse.Namespace) -> int:
    """Spend per tenant against its budgets, from the RoutingPolicies' `status.spend`."""
    from modelroute_operator.logic.fleet_report import format_spend, spend_rows

    snapshot = _read_cluster(args.namespace, args.context, args.kubeconfig)
    rows = spend_rows(snapshot.objects)
    if args.tenant:
        rows = [r for r in rows if r["tenant"] == args.tenant]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_spend(rows))
    return EXIT_OK


CANARY_ACTIONS: dict[str, dict[str, bool]] = {
    "pause": {"paused": True},
    "resume": {"paused": False},
    "promote": {"promote": True, "abort": False},
    "abort": {"abort": True, "promote": False},
}
"""What each `canary` action writes into `status.manual`."""


def canary(args: argparse.Namespace) -> int:
    """Write one action into a Canary's `status.manual` (status subresource: Git's spec stays as it is)."""
    from kubernetes import config
    from kubernetes.client.exceptions import ApiException

    from modelroute_operator.clients.kube import load_client_config, set_canary_actions

    try:
        load_client_config(args.context, args.kubeconfig)
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        active = None
    context = (active or {}).get("context", {})
    namespace = args.namespace or context.get("namespace") or "default"
    by = context.get("user") or os.environ.get("USER") or getpass.getuser()
    actions: dict[str, object] = {**CANARY_ACTIONS[args.action], "by": by[:256]}
    actions["at"] = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    try:
        stored = set_canary_actions(namespace, args.name, actions)
    except ApiException as exc:
        if exc.status == 404:
            print(f"error: Canary {namespace}/{args.name} not found", file=sys.stderr)
            return EXIT_INVALID
        if exc.status == 403:
            print(
                f"error: not allowed to patch modelcanaries/status in {namespace} (the plugin writes the "
                "status subresource, not the spec)",
                file=sys.stderr,
            )
            return EXIT_INVALID
        raise
    phase = (stored.get("status") or {}).get("phase") or "Pending"
    print(f"canary {namespace}/{args.name}: {args.action} requested (status.manual); phase now {phase}")
    return EXIT_OK


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def version() -> str:
    try:
        return importlib.metadata.version("modelroute")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def program_name(argv0: str) -> str:
    """`kubectl modelroute` when run as the kubectl plugin, else `modelroute`."""
    return "kubectl modelroute" if os.path.basename(argv0).startswith("kubectl-") else "modelroute"


def build_parser(prog: str = "modelroute") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="modelroute: manifests, CI and clusters.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    cluster = argparse.ArgumentParser(add_help=False)
    for target in (parser, cluster):
        # Before or after the subcommand; SUPPRESS keeps a subcommand's default from hiding a value
        # given before it.
        default = None if target is parser else argparse.SUPPRESS
        target.add_argument("--context", default=default, help="kubeconfig context to use")
        target.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: KUBECONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False, parents=[cluster])
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress on stderr (the output on stdout is the same)"
    )

    def manifest_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f", "--filename", action="append", required=True, help="file or directory (repeatable)"
        )
        p.add_argument("-n", "--namespace", default="default", help="namespace for objects without one")
        p.add_argument("-R", "--recursive", action="store_true", help="read subdirectories too")

    p = sub.add_parser("render", parents=[common], help="compile manifests to the RouterConfig")
    manifest_args(p)
    p.add_argument("-o", "--output", choices=["json", "yaml"], default="json")
    p.add_argument(
        "--schema",
        type=int,
        choices=ACCEPTED_SCHEMA_VERSIONS,
        help="the document a sidecar of this schema is sent (exit 1 with the reason when it cannot be)",
    )
    p.set_defaults(run=render)

    p = sub.add_parser("validate", parents=[common], help="check manifests (schemas and cross-object rules)")
    manifest_args(p)
    p.set_defaults(run=validate)

    p = sub.add_parser("explain", parents=[common], help="show where a request would be routed and why")
    manifest_args(p)
    p.add_argument("--request", required=True, help="JSON file: an OpenAI request body, or {headers, body}")
    p.add_argument("--api", choices=["chat", "completions", "embeddings", "responses"], default="chat")
    p.add_argument("--region", default="", help="region of the calling sidecar")
    p.add_argument("--seed", type=int, default=0, help="seed of the weighted pick (same seed, same answer)")
    p.add_argument(
        "--pinned",
        default="",
        metavar="ENDPOINT/REPLICA",
        help="session affinity: the replica the request's session is pinned to (default: a new session)",
    )
    p.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="CONFIGMAP=FILE",
        help="a difficulty head file standing for the ConfigMap a policy names (repeatable)",
    )
    p.set_defaults(run=explain)

    p = sub.add_parser("crds", parents=[common], help="generate or check the CRDs")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR")
    group.add_argument("--check", metavar="DIR")
    p.set_defaults(run=crds)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="sync and health of sidecars and objects across namespaces (exit 1 unless all is well)",
    )
    p.add_argument("-n", "--namespace", default=None, help="one namespace (default: all namespaces)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument(
        "--wait",
        action="store_true",
        help="poll until everything is synced and healthy, showing what it waits on; exit 1 at the timeout",
    )
    p.add_argument(
        "--timeout",
        type=_duration,
        default="5m",
        help="how long --wait waits (e.g. 90s, 2m, 1m30s; default 5m)",
    )
    p.set_defaults(run=status)

    p = sub.add_parser(
        "spend", parents=[common], help="spend per tenant against its fleet budgets (today and this month)"
    )
    p.add_argument("-n", "--namespace", default=None, help="one namespace (default: all namespaces)")
    p.add_argument("--tenant", default="", help="only this tenant")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(run=spend)

    p = sub.add_parser(
        "canary",
        parents=[common],
        help="pause, resume, promote or abort a Canary (writes status.manual, never the spec)",
    )
    p.add_argument("action", choices=list(CANARY_ACTIONS))
    p.add_argument("name", help="the Canary")
    p.add_argument("-n", "--namespace", default=None, help="its namespace (default: the context's)")
    p.set_defaults(run=canary)

    router = sub.add_parser("router", help="train and evaluate a learned difficulty model").add_subparsers(
        dest="router_command", required=True
    )
    p = router.add_parser(
        "train",
        parents=[common],
        help="train a difficulty head from labeled prompts (JSON lines: see modelroute_sidecar.router_tools)",
    )
    p.add_argument("--data", required=True, help="labeled prompts, one JSON object a line")
    p.add_argument("--out", required=True, help="directory for head.json and model.json")
    p.add_argument("--name", default="difficulty", help="the model's name in a policy (default: difficulty)")
    p.add_argument("--version", dest="model_version", default="1", help="the model's version (default: 1)")
    p.set_defaults(run=router_train)
    p = router.add_parser(
        "eval", parents=[common], help="strong-call share at 95%%, APGR, CPT(50%%), CPT(80%%) per benchmark"
    )
    p.add_argument("--data", required=True, help="labeled prompts, one JSON object a line")
    p.add_argument("--model", default="builtin", help="a directory `router train` wrote, or builtin")
    p.set_defaults(run=router_eval)
    return parser


def _router_tools() -> Any:
    # The embedding is the sidecar's (numpy, wordllama: the `sidecar` extra), so the figures are those
    # of what the sidecar runs; imported only for these commands.
    try:
        from modelroute_sidecar import router_tools
    except ImportError as exc:
        needs = "`modelroute router` needs the sidecar extra (pip install 'modelroute[sidecar]')"
        raise ValueError(f"{needs}: {exc}") from None
    return router_tools


def router_train(args: argparse.Namespace) -> int:
    """`modelroute router train`: print the model's name, version and sha256 (what a policy pins)."""
    tools = _router_tools()
    rows = tools.read_labeled(args.data)
    args.progress.step(f"training on {len(rows)} labeled prompts")
    entry = tools.write_model(tools.train_head(rows, args.name, args.model_version), args.out)
    args.progress.done()
    print(json.dumps(entry))
    return 0


def router_eval(args: argparse.Namespace) -> int:
    """`modelroute router eval`: one JSON object per router and benchmark, then `all`."""
    tools = _router_tools()
    rows = tools.read_labeled(args.data)
    tools.print_lines(tools.evaluate(rows, tools.load_head_document(args.model)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(program_name(sys.argv[0]))
    args = parser.parse_args(argv)
    args.progress = Progress(sys.stderr, enabled=not args.quiet)
    try:
        return int(args.run(args))
    except (OSError, ValueError) as exc:
        args.progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

"""AdmissionReview in and out, pure: the request the webhooks read and the response they send.

`validation` and `injection` decide; `runtime.webhook_server` speaks HTTP and calls them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REVIEW_API_VERSION = "admission.k8s.io/v1"

Body = Mapping[str, Any]
Patch = list[dict[str, Any]]


# ------------------------------------------------------------------------------------ reviews


class ReviewError(ValueError):
    """The request is not an AdmissionReview we can answer (the server replies 400)."""


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of an `admission.k8s.io/v1` AdmissionReview request the webhooks use."""

    uid: str
    kind: str
    operation: str
    namespace: str
    name: str
    object: Body | None
    old_object: Body | None
    dry_run: bool = False


@dataclass(frozen=True)
class Verdict:
    """The answer to one request; `patch` is a JSONPatch (only mutations have one)."""

    allowed: bool
    message: str = ""
    code: int = 200
    reason: str = ""
    warnings: tuple[str, ...] = ()
    patch: Patch | None = None


def parse_review(body: Any) -> AdmissionRequest:
    """The request inside an AdmissionReview body; ReviewError saying what is missing otherwise."""
    if not isinstance(body, Mapping) or body.get("kind") != "AdmissionReview":
        raise ReviewError("expected an AdmissionReview object")
    if body.get("apiVersion") != REVIEW_API_VERSION:
        raise ReviewError(f"only {REVIEW_API_VERSION} AdmissionReviews are supported")
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise ReviewError("AdmissionReview has no request")
    uid, kind, operation = request.get("uid"), request.get("kind"), request.get("operation")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    if not isinstance(kind, Mapping) or not isinstance(kind.get("kind"), str):
        raise ReviewError("request.kind.kind is missing")
    if not isinstance(operation, str):
        raise ReviewError("request.operation is missing")
    return AdmissionRequest(
        uid=uid,
        kind=kind["kind"],
        operation=operation,
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        object=_mapping_or_none(request.get("object"), "request.object"),
        old_object=_mapping_or_none(request.get("oldObject"), "request.oldObject"),
        dry_run=bool(request.get("dryRun")),
    )


def _mapping_or_none(value: Any, where: str) -> Body | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise ReviewError(f"{where} must be an object")


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview the API server expects back."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": verdict.code,
            "message": verdict.message,
            **({"reason": verdict.reason} if verdict.reason else {}),
        }
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(verdict.patch).encode()).decode()
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}


MAX_WARNINGS = 10
WARNING_LENGTH = 256
"""The API server may truncate longer warnings or drop extra ones; shorten them here, where we choose how."""


def bounded(warnings: Sequence[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(warnings))
    shown = [
        w if len(w) <= WARNING_LENGTH else w[: WARNING_LENGTH - 3] + "..." for w in unique[:MAX_WARNINGS]
    ]
    if len(unique) > MAX_WARNINGS:
        shown[-1] = f"... and {len(unique) - MAX_WARNINGS + 1} more warnings"
    return tuple(shown)


def spec_of(body: Body | None) -> Mapping[str, Any]:
    spec = body.get("spec") if body is not None else None
    return spec if isinstance(spec, Mapping) else {}

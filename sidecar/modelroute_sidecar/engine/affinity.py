"""Session affinity: the pure choice of keeping a conversation on the replica that answered its last turn.

A rule with `affinity` names a session key (a header or a metadata key). The sidecar's table
(`modelroute_sidecar.affinity`) remembers which replica answered a session last; the engine asks it
through `SessionView` and decides here, after every hard filter has run:

- the remembered replica is still a target of the plan (compliant, healthy, not ejected, on the request's
  canary side): it goes first, `kept`;
- it is not: the plan stays as the filters left it, `broken` with the reason (the replica's drop reason,
  `fallback` when it is only a fallback now, `gone` when the rule no longer has it);
- nothing is remembered: `new`, and the first pick is seeded by the session key, so every worker of a
  sidecar (each has its own table) starts the session on the same replica.

Affinity never adds a replica the filters took out: it only reorders what they kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from modelroute_contract import SessionAffinity

from .bandit import BanditPick
from .model import Choice, Decision, Dropped, RequestFeatures, Role

AffinityOutcome = Literal["kept", "new", "broken"]

ATTEMPT_FAILED = "attempt-failed"
"""The pinned replica was tried first and failed; another one answered (and holds the session now)."""


SESSION_DIGEST_BYTES = 16
"""What a session costs the table in key bytes, whatever the length of the value the client sent."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    """One conversation of one rule: what the table is keyed by, with the rule's bounds."""

    policy: str
    rule: str
    digest: bytes
    """`session_digest(tenant, value)`: a fixed-size hash, so the table never holds the session value a
    client sent (up to a header's or a metadata value's size), and each tenant has its own sessions."""
    ttl_seconds: int
    max_sessions: int


def session_digest(tenant: str, value: str) -> bytes:
    """The table key of session `value` sent by `tenant`: two tenants sending the same value (a counter,
    a guessed id) are two sessions, never one pin. The tenant is length-prefixed, so no (tenant, value)
    pair runs into another; its case is folded as everywhere a tenant is compared."""
    tenant = tenant.casefold()
    data = f"{len(tenant)}:{tenant}{value}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=SESSION_DIGEST_BYTES).digest()


@dataclass(frozen=True, slots=True)
class Affinity:
    """What affinity did for a request (reported in the decision header and the audit log)."""

    session: SessionKey
    outcome: AffinityOutcome
    reason: str = ""
    """Why a pin was broken: a drop reason (`ejected`, `unhealthy`, `residency-region`, ...), `fallback`
    or `gone`; empty when kept or new (`settled` adds `attempt-failed`)."""
    pinned: tuple[str, str] = ("", "")
    """(endpoint, replica) remembered before this request; empty for a new session."""

    def settled(self, served: tuple[str, str] | None) -> tuple[AffinityOutcome, str]:
        """(outcome, reason) once the request was answered: a kept pin whose replica failed the attempt
        (another replica answered) is `broken` with reason `attempt-failed`."""
        if self.outcome == "kept" and served is not None and served != self.pinned:
            return "broken", ATTEMPT_FAILED
        return self.outcome, self.reason

    def header(self, served: tuple[str, str] | None) -> str:
        """The `x-modelroute-affinity` value: `kept`, `new` or `broken; reason=<why>`."""
        outcome, reason = self.settled(served)
        return f"broken; reason={reason}" if outcome == "broken" else outcome


class SessionView(Protocol):
    """The sidecar's table of sessions (one per worker)."""

    def pinned(self, session: SessionKey) -> tuple[str, str] | None:
        """(endpoint, replica) that answered the session's last turn, if remembered and not expired."""
        ...


def session_key(
    affinity: SessionAffinity, policy: str, rule: str, features: RequestFeatures
) -> SessionKey | None:
    """The request's session under a rule's affinity (scoped by the request's tenant); None when the
    request does not carry the key."""
    source: Mapping[str, str] = features.headers if affinity.header else features.metadata
    value = source.get(affinity.header or affinity.metadata, "")
    if not value:
        return None
    digest = session_digest(features.metadata.get("tenant", ""), value)
    return SessionKey(policy, rule, digest, affinity.ttl_seconds, affinity.max_sessions)


def session_seed(session: SessionKey) -> int:
    """A stable seed for a new session's first pick (the same in every worker and every process)."""
    digest = hashlib.blake2b(f"{session.policy}\0{session.rule}\0".encode() + session.digest, digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def hold(decision: Decision, session: SessionKey, pinned: tuple[str, str] | None) -> Decision:
    """The decision with the pinned replica first when it is still a target of the plan, and the
    `affinity` outcome saying what happened (see the module docstring)."""
    if pinned is None:
        return dataclasses.replace(decision, affinity=Affinity(session, "new"))
    plan = decision.plan
    for index, choice in enumerate(plan):
        if (choice.endpoint, choice.replica) != pinned:
            continue
        if choice.role == Role.FALLBACK:
            return dataclasses.replace(decision, affinity=Affinity(session, "broken", "fallback", pinned))
        if index:
            plan = _promote(plan, index)
        kept = Affinity(session, "kept", "", pinned)
        pick = decision.bandit
        if pick is not None and pick.endpoint != choice.endpoint:
            # the pin chose the arm, not the bandit: the pull (and the header) name the arm that serves
            pin = BanditPick(choice.endpoint, "affinity")
            return dataclasses.replace(decision, plan=plan, affinity=kept, bandit=pin)  # type: ignore[call-arg]
        return dataclasses.replace(decision, plan=plan, affinity=kept)
    reason = _drop_reason(decision.dropped, pinned)
    return dataclasses.replace(decision, affinity=Affinity(session, "broken", reason, pinned))


def _promote(plan: tuple[Choice, ...], index: int) -> tuple[Choice, ...]:
    """The plan with `plan[index]` first as the primary and the former primary as its first retry."""
    first = dataclasses.replace(plan[index], role=Role.PRIMARY)
    former = dataclasses.replace(plan[0], role=Role.RETRY)
    return (first, former, *plan[1:index], *plan[index + 1 :])


def _drop_reason(dropped: tuple[Dropped, ...], pinned: tuple[str, str]) -> str:
    for drop in dropped:
        if (drop.endpoint, drop.replica) == pinned:
            return str(drop.reason)
    return "gone"

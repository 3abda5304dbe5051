"""Quality feedback: which rule and endpoint served a request id, and the scores clients post for them.

`POST /v1/feedback` names a request by its id; the sidecar remembers the ids it served for a while
(`ServedRequests`: bounded by count and age in two generations, an injected clock) so the score lands
on the rule and endpoint that answered, and `FeedbackTally` sums the scores per (policy, rule,
endpoint) for `/stats` (the contract's `FeedbackFigures`), which the operator's canary analysis reads.
Remembering costs one dict store per served request, made in the accounting callback off the
client's latency.

Each process remembers its own requests. In a multi-worker sidecar, feedback on a new connection may
land on a sibling of the worker that served the request: a worker that does not remember an id asks
its siblings over the control sockets (`admin.sibling_claims`); the one that does claims it (it is
forgotten there) and the score is tallied where the feedback arrived, so the pod's summed `/stats` and
metrics count it once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from modelroute_contract.files import Clock

if TYPE_CHECKING:
    from modelroute_contract.stats import FeedbackFigures

MEMORY_ENTRIES = 100_000
"""Most request ids remembered per process (~20 MiB); at least half as many are always remembered."""

MEMORY_SECONDS = 3600.0
"""A served request can receive feedback for between half this and this long."""

MAX_BODY_BYTES = 4096
"""A feedback body is three small fields; anything larger is a mistake, not feedback."""

MAX_LABEL_CHARS = 64


class Served(NamedTuple):
    """Where a remembered request went, and whose it was."""

    policy: str
    rule: str
    endpoint: str
    tenant: str


class ServedRequests:
    """Request id -> where it went, in two generations of plain dicts: ids go into the current one, which
    becomes the previous one (the older is dropped) after `ttl/2` seconds or `capacity/2` ids.

    So an id is remembered for between half the TTL and the whole of it, and for at least the next
    `capacity/2` ids, never more than `capacity` at once. Cheaper per request than an exact LRU (an
    OrderedDict with an expiry per entry measured ~7,000 instructions a request in the proxy bench):
    one dict store, one clock read and a length check."""

    def __init__(
        self,
        capacity: int = MEMORY_ENTRIES,
        ttl_seconds: float = MEMORY_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self._half, self._span, self._clock = max(1, capacity // 2), ttl_seconds / 2, clock
        self._current: dict[str, tuple[str, str, str, str]] = {}
        self._previous: dict[str, tuple[str, str, str, str]] = {}
        self._rotate_at = clock() + self._span

    def remember(self, request_id: str, policy: str, rule: str, endpoint: str, tenant: str) -> None:
        """Note that `request_id` was served by `endpoint` under `rule` (a reused id: the latest wins)."""
        if self._clock() >= self._rotate_at:
            self._rotate()
        current = self._current
        current[request_id] = (policy, rule, endpoint, tenant)
        if len(current) >= self._half:
            self._rotate()

    def lookup(self, request_id: str) -> Served | None:
        """Where `request_id` went, or None when it is unknown or was forgotten."""
        if self._clock() >= self._rotate_at:
            self._rotate()
        entry = self._current.get(request_id) or self._previous.get(request_id)
        return None if entry is None else Served(*entry)

    def claim(self, request_id: str, tenant: str | None) -> Served | None:
        """Where `request_id` went, taken out of memory: one score per answered request, so a client
        cannot post a request's score again and again to move the mean a Canary is judged on. With
        client keys (`tenant` given), another tenant's request reads as unknown and stays."""
        served = self.lookup(request_id)
        if served is None or (tenant is not None and served.tenant.casefold() != tenant.casefold()):
            return None
        self._current.pop(request_id, None)
        self._previous.pop(request_id, None)
        return served

    def _rotate(self) -> None:
        now = self._clock()
        # idle for a whole span more: what the current generation holds is older than the TTL too
        self._previous = self._current if now < self._rotate_at + self._span else {}
        self._current = {}
        self._rotate_at = now + self._span

    def __len__(self) -> int:
        return len(self._current) + len(self._previous.keys() - self._current.keys())


@dataclass(slots=True)
class FeedbackTally:
    """Count and sum of scores per (policy, rule, endpoint) since the process started."""

    figures: dict[tuple[str, str, str], list[float]]

    def __init__(self) -> None:
        self.figures = {}

    def add(self, policy: str, rule: str, endpoint: str, score: float, count: int = 1) -> None:
        entry = self.figures.setdefault((policy, rule, endpoint), [0, 0.0])
        entry[0] += count
        entry[1] += score

    def merge(self, documents: Iterable[FeedbackFigures]) -> None:
        """Add another worker's figures."""
        for doc in documents:
            self.add(doc.policy, doc.rule, doc.endpoint, doc.score_sum, doc.count)

    def documents(self) -> list[FeedbackFigures]:
        from modelroute_contract.stats import FeedbackFigures  # only /stats needs the models

        return [
            FeedbackFigures(policy=p, rule=r, endpoint=e, count=int(c), score_sum=round(s, 6))
            for (p, r, e), (c, s) in sorted(self.figures.items())
        ]


class FeedbackError(ValueError):
    """A feedback body that cannot be taken: `field` names what is wrong (None for the body itself)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Feedback:
    """One checked feedback body."""

    request_id: str
    score: float
    label: str = ""


def parse_feedback(body: Any) -> Feedback:
    """Check a decoded feedback body: `request_id` (string), `score` (0-1), optional `label`."""
    if not isinstance(body, dict):
        raise FeedbackError("the feedback body must be a JSON object")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise FeedbackError("`request_id` is required and must be a non-empty string", "request_id")
    if len(request_id) > 128:
        raise FeedbackError("`request_id` is longer than 128 characters", "request_id")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise FeedbackError("`score` is required and must be a number from 0 to 1", "score")
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise FeedbackError(f"`score` must be from 0 to 1, not {score!r}", "score")
    label = body.get("label", "")
    if label is None:
        label = ""
    if not isinstance(label, str):
        raise FeedbackError("`label` must be a string", "label")
    if len(label) > MAX_LABEL_CHARS:
        raise FeedbackError(f"`label` is longer than {MAX_LABEL_CHARS} characters", "label")
    unknown = sorted(set(body) - {"request_id", "score", "label"})
    if unknown:
        raise FeedbackError(f"unknown field `{unknown[0]}` (allowed: request_id, score, label)", unknown[0])
    return Feedback(request_id, float(score), label)

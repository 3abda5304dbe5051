"""Steady client load through a sidecar with the official `openai` SDK, recording every outcome."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import openai


@dataclass(frozen=True)
class Outcome:
    status: int
    endpoint: str
    region: str
    error: str = ""
    request_id: str = ""


@dataclass
class Load:
    """Requests in a loop on a background thread until `stop()`; bounded by `max_requests`."""

    base_url: str
    model: str = "support-bot"
    headers: dict[str, str] = field(default_factory=dict)
    sticky_users: int = 0
    """When set, each request carries `x-user-id` from a rotating set of this many users."""
    prompt: str = "hello"
    max_requests: int = 20000
    outcomes: list[Outcome] = field(default_factory=list)
    feedback: dict[str, float] = field(default_factory=dict)
    """Endpoint -> quality score posted (`POST /v1/feedback`) for each answer it gave; empty posts none."""
    feedback_answers: list[int] = field(default_factory=list)
    """The status of every feedback post."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._client = openai.OpenAI(base_url=self.base_url, api_key="test", max_retries=0, timeout=20)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        users = itertools.cycle(range(self.sticky_users or 1))
        for _ in range(self.max_requests):
            if self._stop.is_set():
                return
            headers = dict(self.headers)
            if self.sticky_users:
                headers["x-user-id"] = f"user-{next(users)}"
            outcome = self.send(headers)
            self.outcomes.append(outcome)
            if outcome.endpoint in self.feedback and outcome.request_id:
                self.feedback_answers.append(self.score(outcome.request_id, self.feedback[outcome.endpoint]))

    def score(self, request_id: str, score: float) -> int:
        """Post a quality score for an answered request; the status of the answer."""
        body = json.dumps({"request_id": request_id, "score": score}).encode()
        request = urllib.request.Request(
            self.base_url + "/feedback", data=body, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def send(self, headers: dict[str, str]) -> Outcome:
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=[{"role": "user", "content": self.prompt}], extra_headers=headers
            )
            return Outcome(
                200,
                raw.headers.get("x-modelroute-endpoint", ""),
                raw.headers.get("x-modelroute-region", ""),
                request_id=raw.headers.get("x-request-id", ""),
            )
        except openai.APIStatusError as exc:
            return Outcome(exc.status_code, "", "", str(exc.body))
        except openai.APIError as exc:
            return Outcome(0, "", "", str(exc))

    def failures(self) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.status != 200]

    def regions_since(self, start: int) -> Counter[str]:
        return Counter(o.region for o in list(self.outcomes)[start:] if o.status == 200)

    def endpoints_since(self, start: int) -> Counter[str]:
        return Counter(o.endpoint for o in list(self.outcomes)[start:] if o.status == 200)

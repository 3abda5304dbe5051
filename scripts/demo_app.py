"""The demo's application, as it runs in its pod on the real cluster (image `modelroute/demo-app`).

An ordinary OpenAI SDK program: `openai.OpenAI()` with no base URL of its own. The injected router
sidecar set `OPENAI_BASE_URL` to itself, so every request goes through it. Two commands:

- `serve`: what the container runs; waits until the pod is stopped.
- `traffic ROUNDS`: sends the demo's prompts ROUNDS times and prints one JSON line per request (status,
  the router's decision headers, latency, the error message when refused); `scripts/demo` runs it with
  `kubectl exec` and prints the table.

Standard library and the openai SDK only: the image carries nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

PROMPTS = [
    ("public", {}, "Summarise the plot of Hamlet in two sentences."),
    ("e-mail in prompt", {}, "Draft a reply to jane.doe@example.com about her refund."),
    ("tenant default", {"x-modelroute-tenant": "acme-gmbh"}, "What are your opening hours?"),
    ("declared header", {"x-modelroute-data-class": "eu-personal"}, "Check this customer record."),
]
"""Public traffic, and three ways EU personal data is recognised (a detector, a tenant, a header)."""
DECISION = ("endpoint", "region", "rule", "data-class", "attempts")


def serve() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()
    return 0


def traffic(rounds: int) -> int:
    import openai

    # max_retries=0: the router retries and fails over itself; the SDK's retries would hide that.
    client = openai.OpenAI(api_key="demo", max_retries=0, timeout=30)
    for _ in range(rounds):
        for label, headers, prompt in PROMPTS:
            started = time.perf_counter()
            line: dict[str, object] = {"label": label}
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="assistant", messages=[{"role": "user", "content": prompt}], extra_headers=headers
                )
                line["status"] = raw.status_code
                line.update({k: raw.headers.get(f"x-modelroute-{k}", "") for k in DECISION})
            except openai.APIStatusError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                line.update(status=exc.status_code, message=str(body.get("message") or exc.message))
            except openai.APIConnectionError as exc:
                line.update(status=0, message=f"connection error: {exc}")
            line["ms"] = round((time.perf_counter() - started) * 1000, 1)
            print(json.dumps(line), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["traffic"]:
        print(json.dumps({"base_url": os.environ.get("OPENAI_BASE_URL", "")}), flush=True)
        return traffic(int(argv[1]) if len(argv) > 1 else 1)
    print("usage: app.py serve | traffic [ROUNDS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Canary split through the whole sidecar: 10,000 requests land within 1.5 points of the configured
weight, and one stickiness key always lands on the same side.

The 10,000 go through a plain keep-alive aiohttp client (the SDK costs ~5 ms of CPU per call in this
single test process, which would make the test take a minute); the stickiness checks use the SDK.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp

from tests.component.conftest import Running
from tests.fakes.upstream import FakeUpstream

REQUESTS = 10_000
CONCURRENCY = 32
HI = [{"role": "user", "content": "hi"}]


async def test_canary_split_matches_the_weight_and_is_sticky(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    sides: Counter[str] = Counter()
    keys = iter(range(REQUESTS))
    body = json.dumps({"model": "split", "messages": HI}).encode()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)

    async def worker(session: aiohttp.ClientSession) -> None:
        for user in keys:
            headers = {"x-user": f"user-{user}", "content-type": "application/json"}
            async with session.post(
                sidecar.url + "/v1/chat/completions", data=body, headers=headers
            ) as response:
                assert response.status == 200
                await response.read()
                side = response.headers["x-modelroute-canary"]
                assert response.headers["x-modelroute-endpoint"] == side.split(":")[1]
                sides[side] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    candidate_share = 100 * sides["cand-rollout:candidate"] / REQUESTS
    assert sum(sides.values()) == REQUESTS
    assert abs(candidate_share - 20.0) <= 1.5, sides
    assert len(upstreams["candidate"].requests) == sides["cand-rollout:candidate"]
    assert len(upstreams["stable"].requests) == sides["cand-rollout:stable"]

    # stickiness, through the official SDK: the same key lands on the same side every time
    client = sidecar.client()
    landed = {}
    for user in range(40):
        seen = set()
        for _ in range(5):
            raw = await client.chat.completions.with_raw_response.create(
                model="split", messages=HI, extra_headers={"x-user": f"user-{user}"}
            )
            seen.add(raw.headers["x-modelroute-endpoint"])
        assert len(seen) == 1, (user, seen)
        landed[user] = seen.pop()
    assert set(landed.values()) == {"stable", "candidate"}  # both sides are reachable by some key

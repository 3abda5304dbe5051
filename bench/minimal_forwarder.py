"""The yardstick of DESIGN.md section 6: a minimal aiohttp + uvloop forwarder (parse the JSON, set the
model, forward, relay the answer), with no routing, metrics or audit. `proxy_bench.py` runs it beside the
sidecar, so "close to a minimal forwarder" is a ratio measured in one run, not a figure from elsewhere.

    python bench/minimal_forwarder.py --port 8080 --upstream http://127.0.0.1:9000/v1 --workers 2

Workers share the port with SO_REUSEPORT, as the sidecar's do.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket

from aiohttp import ClientSession, TCPConnector, web


def make_app(upstream: str, model: str) -> web.Application:
    app = web.Application()
    session: dict[str, ClientSession] = {}

    async def start(_: web.Application) -> None:
        session["s"] = ClientSession(connector=TCPConnector(limit=0))

    async def stop(_: web.Application) -> None:
        await session["s"].close()

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        body["model"] = model
        headers = {"content-type": "application/json"}
        url = upstream + "/chat/completions"
        async with session["s"].post(url, data=json.dumps(body), headers=headers) as answer:
            body_bytes = await answer.read()
            return web.Response(status=answer.status, body=body_bytes, content_type="application/json")

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def serve(port: int, upstream: str, model: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    web.run_app(make_app(upstream, model), sock=sock, access_log=None, print=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    workers = [
        multiprocessing.Process(target=serve, args=(args.port, args.upstream, args.model))
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()

"""The HTTP service of tutorial 07: a small price service on 127.0.0.1 that behaves like
real ones (run it as a program; it prints its port, then serves until stopped).

    python tutorial_service.py [--latency 0.01] [--busy 0.1] [--rate 300]

``GET /items/{id}`` answers ``{"id": id, "price": ...}`` after ``latency`` seconds;
about ``busy`` of the calls get a 503 (try again later); more than ``rate`` calls in any
second get a 429 (too many requests). ``GET /stats`` says how many calls were answered
with a price, and how many of those were for an id answered before (tutorial 10 counts
the calls a resumed run makes again).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter, deque

from aiohttp import web


def make_app(latency: float, busy: float, rate: int, seed: int = 7) -> web.Application:
    rng = random.Random(seed)
    recent: deque[float] = deque()  # times of the calls in the last second
    answered: Counter[int] = Counter()  # id -> calls answered with a price

    async def item(request: web.Request) -> web.Response:
        now = time.monotonic()
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= rate:
            return web.json_response({"error": "too many requests"}, status=429)
        recent.append(now)
        await asyncio.sleep(latency)
        if rng.random() < busy:
            return web.json_response({"error": "busy, try again"}, status=503)
        item_id = int(request.match_info["id"])
        answered[item_id] += 1
        return web.json_response({"id": item_id, "price": round(item_id * 1.5 + 3, 2)})

    async def stats(request: web.Request) -> web.Response:
        calls = sum(answered.values())
        return web.json_response({"calls": calls, "again": calls - len(answered)})

    app = web.Application()
    app.router.add_get("/items/{id}", item)
    app.router.add_get("/stats", stats)
    return app


async def serve(latency: float, busy: float, rate: int) -> None:
    runner = web.AppRunner(make_app(latency, busy, rate), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--busy", type=float, default=0.1)
    parser.add_argument("--rate", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(serve(args.latency, args.busy, args.rate))

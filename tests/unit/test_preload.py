"""clusterctl.preload on a real in-process scheduler: each subscriber to the worker-status
feed keeps its own (distributed's one plugin name let the last one silence the others)."""

from __future__ import annotations

import asyncio

from distributed import Scheduler, Worker
from distributed.core import rpc

from clusterctl import preload

RPCS = []  # kept alive: an rpc that goes closes its comms


async def subscribe(address: str):
    RPCS.append(connection := rpc(address))
    comm = await connection.live_comm()
    await comm.write({"op": "subscribe_worker_status"})
    return comm, await comm.read()


async def next_ops(comm) -> list[str]:
    return [op for op, _ in await asyncio.wait_for(comm.read(), 10)]


def test_every_subscriber_hears_of_workers_coming_and_going():
    async def run():
        async with Scheduler(dashboard_address=":0", host="127.0.0.1") as scheduler:
            preload.dask_setup(scheduler)
            preload.dask_setup(scheduler)  # configured and added by clusterctl: once
            first, ident = await subscribe(scheduler.address)
            second, _ = await subscribe(scheduler.address)
            assert ident["workers"] == {}
            async with Worker(scheduler.address, nthreads=1):
                assert await next_ops(first) == ["add"]
                assert await next_ops(second) == ["add"]
            assert await next_ops(first) == ["remove"]
            assert await next_ops(second) == ["remove"]
            await first.close()
            third, ident = await subscribe(scheduler.address)  # drops the closed one's feed
            feeds = [n for n in scheduler.plugins if n.startswith(preload.FEED)]
            assert len(feeds) == 2
            await second.close()
            await third.close()
            for connection in RPCS:
                await connection.close_rpc()

    asyncio.run(run())

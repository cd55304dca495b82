"""The metrics server: ``/metrics`` (Prometheus text format) and ``/healthz`` (liveness).

It runs on the operator's event loop (aiohttp, which kopf already uses), so ``/healthz`` answering
means the loop is alive. The exposition text is rendered in a worker thread so a scrape of a large
datacenter never stalls the loop.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest


def app(registry: CollectorRegistry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/healthz", healthz)
    return application


async def start(registry: CollectorRegistry, address: str, port: int) -> web.AppRunner:
    """Serve until ``runner.cleanup()``; a port that is taken raises (OSError) at once."""
    runner = web.AppRunner(app(registry), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner

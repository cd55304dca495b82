"""Start the kopf operator: settings, handler registration, then the event loop."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from pathlib import Path
from typing import Any

import kopf
import prometheus_client

from vdc.api.meta import GROUP

log = logging.getLogger(__name__)

FINALIZER = f"{GROUP}/finalizer"
"""The finalizer every kind's deletion handler uses."""


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled-configuration annotation: our controllers are level-triggered (they never ask
    kopf what changed), so storing a copy of every spec would only cost an API write per change."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Kubernetes Events only for what a user cares about; kopf's own chatter stays in the log.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]


LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
LOG_FORMATS = {"text": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def run(
    *,
    namespace: list[str],
    liveness: str | None,
    verbose: bool = False,
    log_level: str = "info",
    log_format: str = "text",
    resync_seconds: float | None = None,
    metrics_port: int = 0,
    metrics_address: str = "0.0.0.0",
    stats_interval: float = 15.0,
    work_dir: Path | None = None,
) -> None:
    """Run the operator until interrupted; ``metrics_port`` 0 serves no metrics (and refreshes no stats)."""
    import vdc.handlers  # (registers the kopf handlers)

    if resync_seconds is not None:
        vdc.handlers.set_resync_interval(resync_seconds)

    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a stuck operator.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    level = logging.DEBUG if verbose else LOG_LEVELS[log_level]
    kopf.configure(verbose=level == logging.DEBUG, log_format=LOG_FORMATS[log_format])
    logging.getLogger().setLevel(level)
    if level > logging.DEBUG:
        # kopf logs every handled watch event at INFO ("Handler 'vm_event' succeeded."): noise at scale.
        logging.getLogger("kopf.objects").setLevel(max(level, logging.WARNING))
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
    # handlers.start reads the stats interval from kopf's memo (None: no metrics, no stats refresh).
    memo = kopf.Memo(
        stats_interval=stats_interval if metrics_port else None, work_dir=work_dir, namespaces=tuple(namespace)
    )
    asyncio.run(_serve(namespace, liveness, memo, metrics_port, metrics_address))


async def _serve(namespace: list[str], liveness: str | None, memo: kopf.Memo, port: int, address: str) -> None:
    from vdc.metrics import REGISTRY, server

    runner = await server.start(REGISTRY, address, port) if port else None
    if runner is not None:
        log.info("serving /metrics and /healthz on %s:%d", address, port)
    try:
        await kopf.operator(
            clusterwide=not namespace,
            namespaces=namespace,
            liveness_endpoint=liveness,
            standalone=True,
            memo=memo,
        )
    finally:
        if runner is not None:
            await runner.cleanup()

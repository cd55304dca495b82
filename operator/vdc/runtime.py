"""Start the kopf operator: settings, handler registration, then the event loop."""

from __future__ import annotations

import asyncio
import atexit
import faulthandler
import logging
import os
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import kopf
import prometheus_client
from aiohttp import web

from vdc.api.meta import FINALIZER, GROUP

if TYPE_CHECKING:
    from vdc.leader import ElectionConfig

log = logging.getLogger(__name__)

"""The finalizer every kind's deletion handler uses."""


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled-configuration annotation: our controllers are level-triggered (they never ask
    kopf what changed), so storing a copy of every spec would only cost an API write per change."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        """Nothing: kopf builds the essence (a deep copy of the object) at every watch event only to diff
        it against the stored one, and nothing is stored. At 1,000 VMs it was a seventh of the CPU."""
        return cast(kopf.BodyEssence, {})


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
    demand_half_life: float = 60.0,
    work_dir: Path | None = None,
    election: ElectionConfig | None = None,
    appliance_trust_configmap: tuple[str, str] | None = None,
) -> None:
    """Run the operator until interrupted; ``metrics_port`` 0 serves no metrics (and refreshes no stats).

    With ``election``, nothing of the operator starts before this replica holds the Lease (see
    ``vdc.leader``); /metrics and /healthz, and a stand-in for kopf's liveness endpoint, answer
    while it stands by."""
    import vdc.handlers  # noqa: F401  (registers the kopf handlers)

    if resync_seconds is not None and not resync_seconds > 0:
        raise ValueError(f"resync interval must be more than 0 seconds, not {resync_seconds!r}")

    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a stuck operator; a fatal signal too.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.enable(all_threads=True)
    clean_end = _CleanEnd()
    atexit.register(clean_end.exit)  # registered first: runs after every later handler (the Lease's release)

    level = logging.DEBUG if verbose else LOG_LEVELS[log_level]
    kopf.configure(verbose=level == logging.DEBUG, log_format=LOG_FORMATS[log_format])
    logging.getLogger().setLevel(level)
    if level > logging.DEBUG:
        # kopf logs every handled watch event at INFO ("Handler 'vm_event' succeeded."): noise at scale.
        logging.getLogger("kopf.objects").setLevel(max(level, logging.WARNING))
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
    memo = operator_memo(
        namespace=namespace,
        resync_seconds=resync_seconds,
        stats_interval=stats_interval if metrics_port else None,
        demand_half_life=demand_half_life,
        work_dir=work_dir,
        appliance_trust_configmap=appliance_trust_configmap,
    )
    asyncio.run(_serve(namespace, liveness, memo, metrics_port, metrics_address, election))
    clean_end.stopped = True


class _CleanEnd:
    """Skip the interpreter's finalization after a clean stop.

    By then the operator has stopped, its worker threads are joined and the Lease is released (both
    happen before atexit handlers run). What remains is tearing down modules, and libvirt objects freed
    there can abort the process (seen on the rig: SIGABRT with no Python frame right after a clean
    stop), which would turn a clean stop into a crash. An error leaves finalization as usual."""

    stopped = False

    def exit(self) -> None:
        if not self.stopped:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def operator_memo(
    *,
    namespace: list[str],
    resync_seconds: float | None = None,
    stats_interval: float | None = None,
    demand_half_life: float = 60.0,
    work_dir: Path | None = None,
    appliance_trust_configmap: tuple[str, str] | None = None,
) -> kopf.Memo:
    """What ``vdc.handlers.start`` reads from kopf's memo: the settings of this run (``stats_interval`` None:
    no metrics, no stats refresh; ``resync_seconds`` None: the default). ``start`` adds the runtime."""
    return kopf.Memo(
        namespaces=tuple(namespace),
        resync_seconds=resync_seconds,
        stats_interval=stats_interval,
        demand_half_life=demand_half_life,
        work_dir=work_dir,
        appliance_trust_configmap=appliance_trust_configmap,
    )


async def _serve(
    namespace: list[str],
    liveness: str | None,
    memo: kopf.Memo,
    port: int,
    address: str,
    election: ElectionConfig | None = None,
) -> None:
    from vdc.instruments import REGISTRY
    from vdc.leader import LEADER
    from vdc.metrics import server

    runner = await server.start(REGISTRY, address, port) if port else None
    if runner is not None:
        log.info("serving /metrics and /healthz on %s:%d", address, port)
    try:
        if election is not None and not await _stand_by(election, liveness):
            return  # stopped (SIGTERM/SIGINT) before leading
        LEADER.set(1)
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


async def _stand_by(election: ElectionConfig, liveness: str | None) -> bool:
    """Wait for the Lease: True once this replica leads, False if told to stop first.

    kopf's liveness endpoint only exists once kopf runs, so a stand-in answers on it meanwhile (a
    standby must not fail its liveness probe); it is closed just before kopf binds the same port."""
    from vdc.leader import Elector

    loop = asyncio.get_running_loop()
    leading, stopping = asyncio.Event(), asyncio.Event()
    elector = Elector(election)
    # At a clean exit, once the operator's worker threads have been joined (atexit runs after them),
    # give the Lease up so a standby need not wait for it to expire. A fenced exit skips this.
    atexit.register(elector.release)
    waited = time.monotonic()
    log.info("standing by for Lease %s/%s as %s", election.lease_namespace, election.lease_name, election.identity)
    elector.start(lambda: loop.call_soon_threadsafe(leading.set))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    stand_in = await _liveness_stand_in(liveness) if liveness else None
    try:
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(leading.wait()), asyncio.ensure_future(stopping.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # kopf installs its own
        if stand_in is not None:
            await stand_in.cleanup()
    if stopping.is_set() or not leading.is_set():
        log.info("stopped while standing by")
        return False
    log.info(
        "leading: holding Lease %s/%s as %s (after %.1fs standing by); starting the operator",
        election.lease_namespace, election.lease_name, election.identity, time.monotonic() - waited,
    )  # fmt: skip
    return True


async def _liveness_stand_in(url: str) -> web.AppRunner:
    """Answer kopf's liveness URL (``http://host:port/path``, as kopf parses it) while standing by."""
    parts = urllib.parse.urlsplit(url)

    async def standby(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get(parts.path or "/", standby)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, parts.hostname or "localhost", parts.port or 80).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner

"""Leader election on a ``coordination.k8s.io/v1`` Lease: of several ``vdc run --leader-elect``
replicas one leads (runs kopf and everything behind it), the others stand by.

The algorithm is the kubernetes client's own ``kubernetes.leaderelection`` (``LeaderElection`` with a
``LeaseLock``), a port of client-go's: a candidate takes the Lease when its record has not changed for
the lease duration; the leader renews it every retry period and gives up when a renewal round passes
the renew deadline. It is synchronous and thread-based, so it runs in a daemon thread beside the
operator's event loop. Read for this module (kubernetes 37), it has gaps that matter for fencing,
closed here rather than by forking it:

1. A Lease call that raises anything but ``ApiException`` (connection refused, a timeout: the network
   is gone) escapes ``LeaderElection.run`` and ends the thread silently: a leader would go on acting,
   never renewing and never told to stop; a standby would never take over. -> every Lease call goes
   through ``LeaseApi``, which turns such errors into ``ApiException`` (the library counts a failed
   attempt) and gives each call a timeout (the library sets none).
2. Its renew deadline starts with each renewal round, one retry period after the last success, and an
   attempt started just before the deadline may run past it; it gives up at the earliest retry period
   + renew deadline after its last renewal. -> a watchdog (``Elector.check``) fences as soon as
   ``renew_deadline`` has passed since the *start* of the last successful renewal (the API server
   wrote it after that instant, and a standby counts the lease duration from no earlier than that).
3. It judges expiry on the wall clock (``time.time()``): a clock step forward on a standby would make it
   take a live Lease. -> ``LeaseApi`` refuses a takeover unless the Lease (its resourceVersion) has
   stayed unchanged for the lease duration on the monotonic clock, and it counts the longer of ours and
   the Lease's ``leaseDurationSeconds`` (replicas started with different timings stay safe).
4. It never releases the Lease, nor counts ``leaseTransitions``. -> ``LeaseApi.release`` (at a clean
   exit) clears the holder, so a standby takes over within a retry period instead of a lease duration;
   a takeover increments ``leaseTransitions``.

Fencing is controller-runtime's: a leader that cannot renew in time exits the process at once
(``os._exit``, non-zero), so the pod restarts as a standby; nothing is stopped gracefully first. A
process that was paused (SIGSTOP, a frozen cgroup, a long stall) resumes all its threads at once: on
SIGCONT a signal handler in the main thread, where the event loop runs, checks the deadline before the
loop runs anything else; for a pause without SIGCONT the watchdog thread races the loop. Calls already
in flight in worker threads (a libvirt call) finish either way, as with client-go.

No I/O at import; nothing above ``vdc.kube`` and ``vdc.metrics`` is imported.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
from prometheus_client import Gauge

from vdc.instruments import REGISTRY
from vdc.kube.client import load_config

log = logging.getLogger(__name__)

LEADER = Gauge(
    "vdc_operator_leader",
    "1 while this replica leads (runs the controllers), 0 while it stands by for the Lease",
    registry=REGISTRY,
)

LOST_EXIT_CODE = 1
"""The exit code of a leader that lost its Lease (the pod restarts as a standby)."""

JITTER_FACTOR = 1.2
"""``kubernetes.leaderelection.electionconfig.Config`` exits unless renew deadline > this x retry period."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def default_identity() -> str:
    """``POD_NAME`` (the chart sets it from the downward API), else hostname and pid.

    A container restarted in the same pod keeps its identity and so renews a Lease it still holds at
    once: safe, its previous process is gone."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """``POD_NAMESPACE`` (the chart sets it), else ``default``."""
    return os.environ.get("POD_NAMESPACE") or "default"


@dataclass(frozen=True)
class ElectionConfig:
    """Where the Lease is, who we are, and the timings (seconds; controller-runtime's defaults)."""

    lease_name: str
    lease_namespace: str
    identity: str
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        problems = []
        if len(self.lease_name) > 253 or not _DNS_SUBDOMAIN.match(self.lease_name):
            problems.append(f"lease name {self.lease_name!r} is not a DNS subdomain name")
        if len(self.lease_namespace) > 63 or not _DNS_LABEL.match(self.lease_namespace):
            problems.append(f"lease namespace {self.lease_namespace!r} is not a namespace name")
        if not self.identity:
            problems.append("the identity is empty")
        if isinstance(self.lease_duration, bool) or not isinstance(self.lease_duration, int):
            problems.append(f"lease duration {self.lease_duration!r} is not whole seconds (a Lease holds an integer)")
        if self.retry_period < 1:
            problems.append(f"retry period {self.retry_period}s is less than 1s (the client library's minimum)")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            problems.append(
                f"renew deadline {self.renew_deadline}s must be more than {JITTER_FACTOR} x the retry period"
                f" ({self.retry_period}s): a leader needs more than one attempt to renew"
            )
        if self.renew_deadline > self.lease_duration - 1:
            problems.append(
                f"renew deadline {self.renew_deadline}s must be at least 1s shorter than the lease duration"
                f" {self.lease_duration}s: a leader that cannot renew must have stopped before a standby takes over"
            )
        return problems


def coordination_api() -> Any:
    """A CoordinationV1Api on its own connection pool (kubeconfig, or in-cluster): a busy operator
    never makes a renewal wait for a connection."""
    return kubernetes.client.CoordinationV1Api(load_config())


def exit_process(reason: str) -> None:
    """The fence: log and leave at once, running nothing else (no cleanup, no atexit, no release)."""
    log.critical("leadership lost: %s; exiting (code %d) so nothing acts without the Lease", reason, LOST_EXIT_CODE)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LOST_EXIT_CODE)


class LeaseApi:
    """The three ``CoordinationV1Api`` calls ``LeaseLock`` makes (read, create, replace), guarded: set as
    the lock's ``api_instance``. Closes gaps 1, 3 and 4 of the module docstring and records, for the
    watchdog, when the last write that made us the holder started."""

    def __init__(self, api: Any, config: ElectionConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._coordination = api  # a CoordinationV1Api
        self._config = config
        self._clock = clock
        self._timeout = config.renew_deadline / 2
        self._mutex = threading.Lock()  # a renewal and the release never interleave
        self.released = False
        self.renewed_at: float | None = None
        """Monotonic start of the last successful write that left us the holder."""
        self._version: str | None = None  # the Lease as last seen: resourceVersion, when, holder, duration
        self._version_at = 0.0
        self._holder: str | None = None
        self._duration = 0
        self._last_problem: str | None = None

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        lease = self._call("read", self._coordination.read_namespaced_lease, name, namespace)
        self._observe(lease)
        return lease

    def create_namespaced_lease(self, namespace: str, body: Any, **_: Any) -> Any:
        with self._mutex:
            self._refuse_if_released()
            started = self._clock()
            lease = self._call("create", self._coordination.create_namespaced_lease, namespace, body)
            self._wrote(lease, started)
            return lease

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        with self._mutex:
            self._refuse_if_released()
            holder = self._holder
            if holder and holder != self._config.identity:
                wait = max(self._config.lease_duration, self._duration)
                unchanged = self._clock() - self._version_at
                if unchanged < wait:
                    reason = f"the Lease of {holder} has been unchanged for {unchanged:.1f}s of {wait}s"
                    log.debug("not taking the Lease yet: %s", reason)
                    raise kubernetes.client.ApiException(status=0, reason=reason)
            if holder != self._config.identity and body.spec is not None:
                body.spec.lease_transitions = (body.spec.lease_transitions or 0) + 1
            started = self._clock()
            lease = self._call("update", self._coordination.replace_namespaced_lease, name, namespace, body)
            self._wrote(lease, started)
            return lease

    def release(self) -> None:
        """Stop renewing; if we hold the Lease, clear its holder (client-go's release: holder empty,
        duration 1s) so a standby takes over at its next attempt. Only for a process about to exit
        whose operator has stopped."""
        with self._mutex:
            if self.released:
                return
            self.released = True
            if self.renewed_at is None:
                return
            name, namespace = self._config.lease_name, self._config.lease_namespace
            try:
                lease = self._coordination.read_namespaced_lease(name, namespace, _request_timeout=self._timeout)
                if lease.spec is None or lease.spec.holder_identity != self._config.identity:
                    return
                now = datetime.now(UTC)
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                lease.spec.acquire_time = lease.spec.renew_time = now
                self._coordination.replace_namespaced_lease(name, namespace, lease, _request_timeout=self._timeout)
                log.info("released Lease %s/%s", namespace, name)
            except Exception as exc:
                log.warning("could not release Lease %s/%s (a standby takes it at expiry): %s", namespace, name, exc)

    def _refuse_if_released(self) -> None:
        if self.released:
            raise kubernetes.client.ApiException(status=0, reason="released: this replica is exiting")

    def _call(self, what: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            result = method(*args, _request_timeout=self._timeout)
        except kubernetes.client.ApiException as exc:
            # 404: no Lease yet (the library creates it); 409: another candidate wrote first.
            self._problem(f"{what}: {exc.status} {exc.reason}", quiet=exc.status in (404, 409))
            raise
        except Exception as exc:  # the library catches only ApiException (gap 1)
            self._problem(f"{what}: {type(exc).__name__}: {exc}")
            raise kubernetes.client.ApiException(status=0, reason=f"{type(exc).__name__}: {exc}") from exc
        self._last_problem = None
        return result

    def _problem(self, message: str, *, quiet: bool = False) -> None:
        lease = f"{self._config.lease_namespace}/{self._config.lease_name}"
        if quiet or message == self._last_problem:
            log.debug("Lease %s %s", lease, message)
        else:
            log.warning("Lease %s %s", lease, message)
        self._last_problem = None if quiet else message

    def _observe(self, lease: Any) -> None:
        """Note when the Lease last changed, on our monotonic clock (gap 3)."""
        version = lease.metadata.resource_version if lease.metadata else None
        if version is None or version != self._version:
            self._version, self._version_at = version, self._clock()
            spec = lease.spec
            self._holder = (spec.holder_identity or None) if spec else None
            self._duration = (spec.lease_duration_seconds or 0) if spec else 0

    def _wrote(self, lease: Any, started: float) -> None:
        self._observe(lease)
        if self._holder == self._config.identity:
            self.renewed_at = started


class Elector:
    """Runs the election in a daemon thread; ``on_leading`` is called (in that thread) once this
    replica holds the Lease. From then on losing it calls ``fence`` (default: exit the process)."""

    def __init__(
        self,
        config: ElectionConfig,
        api: Any = None,
        *,
        fence: Callable[[str], None] = exit_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.lease = LeaseApi(api if api is not None else coordination_api(), config, clock=clock)
        self._fence = fence
        self._clock = clock
        self._leading = threading.Event()

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def start(self, on_leading: Callable[[], object]) -> None:
        config = self.config
        lock: Any = LeaseLock(config.lease_name, config.lease_namespace, config.identity)  # type: ignore[no-untyped-call]
        lock.api_instance = self.lease

        def started() -> None:
            self._leading.set()
            LEADER.set(1)
            threading.Thread(target=self._watch, name="leader-watchdog", daemon=True).start()
            on_leading()

        def stopped() -> None:
            self._fence(f"Lease not renewed within the renew deadline ({config.renew_deadline}s)")

        timings = (config.lease_duration, config.renew_deadline, config.retry_period)
        election = leaderelection.LeaderElection(  # type: ignore[no-untyped-call]
            electionconfig.Config(lock, *timings, started, stopped)  # type: ignore[no-untyped-call]
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGCONT, lambda *_: self.check())
        # The library logs every attempt at INFO (each renewal, each look at a held Lease); LeaseApi
        # logs the failures, the runtime the transitions.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("leaderelection").setLevel(logging.WARNING)
        LEADER.set(0)
        threading.Thread(target=self._run, args=(election,), name="leader-election", daemon=True).start()

    def check(self) -> None:
        """Fence if we lead and the last successful renewal started more than the renew deadline ago."""
        if not self._leading.is_set() or self.lease.released:
            return
        renewed = self.lease.renewed_at
        if renewed is None:
            self._fence("leading without a renewal")
            return
        age = self._clock() - renewed
        if age > self.config.renew_deadline:
            self._fence(f"the last renewal started {age:.1f}s ago, renew deadline {self.config.renew_deadline}s")

    def release(self) -> None:
        self.lease.release()

    def _watch(self) -> None:
        interval = min(0.25, self.config.renew_deadline / 20)
        while not self.lease.released:
            time.sleep(interval)
            self.check()

    def _run(self, election: Any) -> None:
        # LeaderElection.run returns only after leading and failing to renew (``stopped`` has fenced);
        # with LeaseApi nothing should escape it. Either way, a replica without its election thread
        # could never lead again or could lead unchecked: fence.
        try:
            election.run()
            reason = "the leader election ended"
        except BaseException as exc:
            log.exception("the leader election failed")
            reason = f"the leader election failed: {exc}"
        self._fence(reason)

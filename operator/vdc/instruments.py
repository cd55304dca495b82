"""The Prometheus instruments of the operator, in its own registry (never prometheus-client's global one).

They are fed at the choke points, low in the import layers: the work queue (reconciles, depth, adds),
``HostConnection.call`` (libvirt calls) and ``KubeWriter`` (API writes); metering counters are advanced
by ``vdc.metrics.refresher.StatsRefresher``. :mod:`vdc.metrics` reads the cluster and serves them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

REGISTRY = CollectorRegistry()
"""What `/metrics` serves."""

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


_M = TypeVar("_M", bound=MetricWrapperBase)


@functools.cache
def child(metric: _M, *values: str) -> _M:
    """``metric.labels(*values)``, kept: the choke points count every write and reconcile, and ``labels``
    checks, locks and looks up each time. (Nothing here removes a label set, which would detach a kept one.)"""
    return metric.labels(*values)


def _counter(name: str, doc: str, *labels: str) -> Counter:
    return Counter(name, doc, labels, registry=REGISTRY)


def _histogram(name: str, doc: str, *labels: str, buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> Histogram:
    return Histogram(name, doc, labels, buckets=buckets, registry=REGISTRY)


RECONCILE_TOTAL = _counter(
    "vdc_reconcile_total", "Reconciles per controller, by result (success, error, requeue)", "controller", "result"
)
RECONCILE_ERRORS = _counter("vdc_reconcile_errors_total", "Reconciles that failed, per controller", "controller")
RECONCILE_TIME = _histogram(
    "vdc_reconcile_time_seconds", "Time one reconcile took, per controller", "controller", buckets=RECONCILE_BUCKETS
)
WORKQUEUE_DEPTH = Gauge("vdc_workqueue_depth", "Keys waiting in a work queue", ["name"], registry=REGISTRY)
WORKQUEUE_ADDS = _counter("vdc_workqueue_adds_total", "Keys put on a work queue (after deduplication)", "name")
RESYNC_VM_CHECKS = _counter(
    "vdc_resync_vm_checks_total",
    "The safety-net resync's checks of a VM against its last settled reconcile, by outcome (settled: nothing to"
    " do; reconcile: queued for a full reconcile)",
    "outcome",
)
LIBVIRT_CALL_DURATION = _histogram(
    "vdc_libvirt_call_duration_seconds",
    "Time a libvirt call took as its caller waited for it (including queueing for the host's call threads)",
    "host",
)
LIBVIRT_CALL_ERRORS = _counter("vdc_libvirt_call_errors_total", "libvirt calls that raised an error, per host", "host")
API_WRITES = _counter("vdc_api_writes_total", "Writes to the Kubernetes API", "kind", "verb")

METERING_VCPU = _counter(
    "vdc_metering_vcpu_seconds_total", "vCPUs allocated to running VMs integrated over time, per namespace", "namespace"
)
METERING_MEMORY = _counter(
    "vdc_metering_memory_byte_seconds_total",
    "Memory (bytes) allocated to running VMs integrated over time, per namespace",
    "namespace",
)
METERING_DISK = _counter(
    "vdc_metering_disk_byte_seconds_total",
    "Disk capacity (bytes) attached to running VMs integrated over time, per namespace",
    "namespace",
)

MIGRATIONS = _counter(
    "vdc_migrations_total", "Live migrations that ended, by phase (Succeeded, Failed, Cancelled)", "phase"
)
MIGRATION_DURATION = _histogram(
    "vdc_migration_duration_seconds",
    "Time from a live migration's first step to its end (Succeeded only)",
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
MIGRATION_DOWNTIME = _histogram(
    "vdc_migration_downtime_seconds",
    "The guest's pause at a live migration's switch-over, as libvirt reports it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

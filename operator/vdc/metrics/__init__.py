"""Prometheus metrics of the operator: what is served at ``/metrics`` and how the datacenter is read for it.

The instruments and their registry live in :mod:`vdc.instruments` (fed from low layers: the work queue,
``HostConnection.call``, ``KubeWriter``), re-exported here. Datacenter and per-VM metrics are yielded at
scrape time by ``vdc.metrics.collectors.DatacenterCollector``; metering counters are advanced by
``vdc.metrics.refresher.StatsRefresher``.
"""

from __future__ import annotations

from vdc.instruments import (
    API_WRITES,
    LIBVIRT_CALL_DURATION,
    LIBVIRT_CALL_ERRORS,
    METERING_DISK,
    METERING_MEMORY,
    METERING_VCPU,
    RECONCILE_BUCKETS,
    RECONCILE_ERRORS,
    RECONCILE_TIME,
    RECONCILE_TOTAL,
    REGISTRY,
    WORKQUEUE_ADDS,
    WORKQUEUE_DEPTH,
)

__all__ = [
    "API_WRITES",
    "LIBVIRT_CALL_DURATION",
    "LIBVIRT_CALL_ERRORS",
    "METERING_DISK",
    "METERING_MEMORY",
    "METERING_VCPU",
    "RECONCILE_BUCKETS",
    "RECONCILE_ERRORS",
    "RECONCILE_TIME",
    "RECONCILE_TOTAL",
    "REGISTRY",
    "WORKQUEUE_ADDS",
    "WORKQUEUE_DEPTH",
]

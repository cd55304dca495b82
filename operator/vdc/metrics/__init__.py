"""Prometheus metrics of the operator, in its own registry (never prometheus-client's global one).

The instruments here are fed at the choke points: the work queue (reconciles, depth, adds),
``HostConnection.call`` (libvirt calls) and ``KubeWriter`` (API writes). Datacenter and per-VM
metrics are yielded at scrape time by ``vdc.metrics.collectors.DatacenterCollector``; metering
counters are advanced by ``vdc.metrics.refresher.StatsRefresher``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
"""What `/metrics` serves."""

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

RECONCILE_TOTAL = Counter(
    "vdc_reconcile_total",
    "Reconciles per controller, by result (success, error, requeue)",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "vdc_reconcile_errors_total", "Reconciles that failed, per controller", ["controller"], registry=REGISTRY
)
RECONCILE_TIME = Histogram(
    "vdc_reconcile_time_seconds",
    "Time one reconcile took, per controller",
    ["controller"],
    buckets=RECONCILE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_DEPTH = Gauge("vdc_workqueue_depth", "Keys waiting in a work queue", ["name"], registry=REGISTRY)
WORKQUEUE_ADDS = Counter(
    "vdc_workqueue_adds_total", "Keys put on a work queue (after deduplication)", ["name"], registry=REGISTRY
)
LIBVIRT_CALL_DURATION = Histogram(
    "vdc_libvirt_call_duration_seconds",
    "Time a libvirt call took as its caller waited for it (including queueing for the host's call threads)",
    ["host"],
    registry=REGISTRY,
)
LIBVIRT_CALL_ERRORS = Counter(
    "vdc_libvirt_call_errors_total", "libvirt calls that raised an error, per host", ["host"], registry=REGISTRY
)
API_WRITES = Counter("vdc_api_writes_total", "Writes to the Kubernetes API", ["kind", "verb"], registry=REGISTRY)

METERING_VCPU = Counter(
    "vdc_metering_vcpu_seconds_total",
    "vCPUs allocated to running VMs integrated over time, per namespace",
    ["namespace"],
    registry=REGISTRY,
)
METERING_MEMORY = Counter(
    "vdc_metering_memory_byte_seconds_total",
    "Memory (bytes) allocated to running VMs integrated over time, per namespace",
    ["namespace"],
    registry=REGISTRY,
)
METERING_DISK = Counter(
    "vdc_metering_disk_byte_seconds_total",
    "Disk capacity (bytes) attached to running VMs integrated over time, per namespace",
    ["namespace"],
    registry=REGISTRY,
)

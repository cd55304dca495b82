"""StoragePool status from what each host reported: per-host entries, totals, conditions."""

from __future__ import annotations

from vdc.api.storagepool import StoragePool
from vdc.controllers.storagepool import PoolOnHost, libvirt_pool_name, pool_config, pool_status

GI = 2**30


def pool(**spec: object) -> StoragePool:
    return StoragePool.model_validate(
        {"metadata": {"name": "fast"}, "spec": {"type": "dir", "target": {"path": "/srv/fast"}, **spec}}
    )


def test_libvirt_pool_is_prefixed_so_foreign_pools_are_never_touched() -> None:
    config = pool_config(pool())
    assert config.name == libvirt_pool_name("fast") == "vdc-fast"
    assert (config.type, config.target_path) == ("dir", "/srv/fast")
    config.to_string()


def test_running_everywhere_is_ready_with_totals_less_reservation() -> None:
    status = pool_status(
        pool(reserved="1Gi"),
        [
            PoolOnHost("h1", "running", 10 * GI, 2 * GI, 8 * GI, volumes=3),
            PoolOnHost("h2", "running", 10 * GI, 0, 10 * GI),
        ],
        4,
        None,
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "True" and status.ready_hosts == 2
    assert status.capacity == "20480Mi" and status.available == "17408Mi"
    h1 = status.hosts[0]
    assert (h1.host, h1.state, h1.available, h1.volumes) == ("h1", "Running", "7168Mi", 3)


def test_shared_pool_counts_its_storage_once() -> None:
    both = [PoolOnHost("h1", "running", 10 * GI, 0, 10 * GI), PoolOnHost("h2", "running", 10 * GI, 0, 10 * GI)]
    status = pool_status(pool(shared=True), both, 1, None)
    assert status.capacity == "10240Mi"


def test_an_unreachable_or_failed_host_makes_it_not_ready_and_says_where() -> None:
    status = pool_status(
        pool(), [PoolOnHost("h1", "running", GI, 0, GI), PoolOnHost("h2", None, message="host unreachable"),
                 PoolOnHost("h3", "failed", message="cannot create /srv/fast: read-only")], 1, None,
    )  # fmt: skip
    ready = next(c for c in status.conditions if c.type == "Ready")
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert ready.status == "False" and "h2: Unknown" in ready.message and "h3: Failed" in ready.message
    assert stalled.status == "True" and "read-only" in stalled.message


def test_no_matching_host_is_not_ready() -> None:
    ready = next(c for c in pool_status(pool(), [], 1, None).conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "NoHosts")

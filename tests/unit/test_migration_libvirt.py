"""The libvirt side of a live migration, pure parts: flags and parameters, job statistics, progress."""

from __future__ import annotations

import libvirt

from vdc.controllers.migration import progress_of
from vdc.libvirt.migration import JobStats, MigrationRequest, job_stats_from, migration_call


def test_a_memory_only_migration_is_live_peer_to_peer_persisted_and_undefines_the_source() -> None:
    params, flags = migration_call(MigrationRequest(target_uri="qemu+unix:///system?socket=/t"))
    for flag in (
        libvirt.VIR_MIGRATE_LIVE,
        libvirt.VIR_MIGRATE_PEER2PEER,
        libvirt.VIR_MIGRATE_PERSIST_DEST,
        libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    ):
        assert flags & flag
    assert not flags & (libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
    assert not flags & (libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_AUTO_CONVERGE)
    assert not flags & libvirt.VIR_MIGRATE_UNSAFE
    assert params == {}


def test_disks_on_a_shared_pool_need_the_unsafe_flag_libvirt_trusts_only_network_filesystems() -> None:
    _, flags = migration_call(MigrationRequest(target_uri="x", shared_disks=True))
    assert flags & libvirt.VIR_MIGRATE_UNSAFE


def test_local_disks_are_copied_top_layer_only_and_named() -> None:
    params, flags = migration_call(
        MigrationRequest(target_uri="x", data_uri="tcp://10.0.0.2", copy_disks=("vda", "vdb"), bandwidth_mib=64)
    )
    assert flags & libvirt.VIR_MIGRATE_NON_SHARED_INC
    assert not flags & libvirt.VIR_MIGRATE_NON_SHARED_DISK
    assert params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] == ["vda", "vdb"]
    assert params[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://10.0.0.2"
    assert params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] == 64


def test_policy_switches_become_flags() -> None:
    _, flags = migration_call(MigrationRequest(target_uri="x", auto_converge=True, allow_post_copy=True))
    assert flags & libvirt.VIR_MIGRATE_AUTO_CONVERGE and flags & libvirt.VIR_MIGRATE_POSTCOPY


def test_job_stats_are_read_from_libvirts_dictionary() -> None:
    stats = job_stats_from(
        {
            "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
            libvirt.VIR_DOMAIN_JOB_MEMORY_PROCESSED: 30 * 2**20,
            libvirt.VIR_DOMAIN_JOB_MEMORY_REMAINING: 70 * 2**20,
            libvirt.VIR_DOMAIN_JOB_MEMORY_TOTAL: 100 * 2**20,
            libvirt.VIR_DOMAIN_JOB_MEMORY_ITERATION: 2,
            libvirt.VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE: 256,
            libvirt.VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE: 4096,
            libvirt.VIR_DOMAIN_JOB_DOWNTIME: 300,
            libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED: 1500,
        }
    )
    assert stats.active
    assert stats.memory_total == 100 * 2**20 and stats.iteration == 2
    assert stats.dirty_rate == 256 * 4096  # pages per second times the page size
    assert stats.downtime_ms == 300 and stats.elapsed_ms == 1500
    assert not job_stats_from({"type": libvirt.VIR_DOMAIN_JOB_NONE}).active
    assert not job_stats_from({"type": libvirt.VIR_DOMAIN_JOB_COMPLETED}).active


def test_progress_counts_memory_and_disks_together() -> None:
    progress = progress_of(
        JobStats(
            active=True,
            memory_processed=50 * 2**20,
            memory_remaining=50 * 2**20,
            memory_total=100 * 2**20,
            disk_processed=100 * 2**20,
            disk_remaining=100 * 2**20,
            disk_total=300 * 2**20,
            iteration=1,
        )
    )
    assert progress.percent == 62  # (400 - 150) / 400
    assert progress.memory is not None and progress.memory.total == "100Mi"
    assert progress.disks is not None and progress.disks.remaining == "100Mi"


def test_progress_of_a_job_that_has_copied_everything_is_not_yet_100() -> None:
    almost = progress_of(JobStats(active=True, memory_processed=10, memory_remaining=1, memory_total=10))
    assert almost.percent is not None and almost.percent <= 99
    nothing_known = progress_of(JobStats(active=True))
    assert nothing_known.percent is None and nothing_known.disks is None

"""Live migration at the libvirt boundary: the flags and typed parameters of ``virDomainMigrateToURI3``
(pure, :func:`migration_call`), and the blocking calls around a migration job (call them through
``HostConnection``). No policy here: what to migrate, where and how fast is decided by the caller.

The migration is peer-to-peer: the source's libvirtd connects to the target's and drives every phase
itself, so a migration that has begun completes or fails in libvirt whatever becomes of the client
that asked for it (an operator killed mid-way finds the outcome in libvirt when it comes back)."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import libvirt

from vdc.libvirt.errors import DomainNotFound, InvalidState, LibvirtFailure, connection_alive, translate, translated

# The libvirt job types jobStats() reports.
JOB_NONE = libvirt.VIR_DOMAIN_JOB_NONE
JOB_ACTIVE = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


class MigrationError(LibvirtFailure):
    """libvirt refused or aborted the migration while the source host still answers (the target was lost,
    the job was cancelled, the disks could not be copied …): the guest runs on, on the source."""


@dataclass(frozen=True)
class MigrationRequest:
    """One migration, as libvirt is asked for it."""

    target_uri: str
    """The target libvirtd, as the *source's* libvirtd reaches it (peer-to-peer)."""
    data_uri: str | None = None
    """Where QEMU sends the migration stream (tcp://address), None: the target's hostname."""
    copy_disks: tuple[str, ...] = ()
    """Target devices (vda …) of disks copied to the target (non-shared storage, top layer only)."""
    bandwidth_mib: int | None = None
    auto_converge: bool = False
    allow_post_copy: bool = False
    max_downtime_ms: int | None = None
    shared_disks: bool = False
    """Some disks are on storage every host sees (not copied). libvirt trusts only network filesystems
    to be shared and refuses the migration otherwise ("unsafe"): the caller knows the pool is shared."""


def migration_call(request: MigrationRequest) -> tuple[dict[str, Any], int]:
    """(typed parameters, flags) for ``virDomainMigrateToURI3``: live, peer-to-peer, persisted on the
    target and undefined on the source only when the migration succeeded."""
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    )
    params: dict[str, Any] = {}
    if request.data_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = request.data_uri
    if request.copy_disks:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC  # the top layer: overlays keep their base on the target
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(request.copy_disks)
    if request.shared_disks:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if request.bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = request.bandwidth_mib
    if request.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if request.allow_post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return params, flags


def _domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    with translated():
        return conn.lookupByUUIDString(uuid)


def migrate(conn: libvirt.virConnect, uuid: str, request: MigrationRequest) -> None:
    """Run the migration to its end (blocking: minutes). Raises MigrationError when it fails and the
    source still answers, HostUnreachable (or another LibvirtFailure) otherwise."""
    dom = _domain(conn, uuid)
    params, flags = migration_call(request)
    if request.max_downtime_ms:
        with contextlib.suppress(libvirt.libvirtError):  # some versions: only while a job runs
            dom.migrateSetMaxDowntime(request.max_downtime_ms, 0)
    try:
        dom.migrateToURI3(request.target_uri, params, flags)
    except libvirt.libvirtError as exc:
        if connection_alive(conn):
            raise MigrationError(exc.get_error_message() or str(exc), code=exc.get_error_code()) from exc
        raise translate(exc) from exc


@dataclass(frozen=True)
class JobStats:
    """A domain's migration job as libvirt reports it (bytes, milliseconds)."""

    active: bool
    memory_processed: int | None = None
    memory_remaining: int | None = None
    memory_total: int | None = None
    disk_processed: int | None = None
    disk_remaining: int | None = None
    disk_total: int | None = None
    iteration: int | None = None
    dirty_rate: int | None = None
    """Bytes per second (libvirt reports pages per second and the page size)."""
    downtime_ms: int | None = None
    """Expected (active job) or actual (completed job) downtime."""
    elapsed_ms: int | None = None
    post_copy: bool = False


def job_stats_from(stats: Mapping[str, Any]) -> JobStats:
    """Our view of ``virDomainGetJobStats``'s dictionary. Pure."""

    def num(key: str) -> int | None:
        value = stats.get(key)
        return int(value) if isinstance(value, int | float) else None

    pages, page_size = num(libvirt.VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE), num(libvirt.VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE)
    return JobStats(
        active=stats.get("type") in JOB_ACTIVE,
        memory_processed=num(libvirt.VIR_DOMAIN_JOB_MEMORY_PROCESSED),
        memory_remaining=num(libvirt.VIR_DOMAIN_JOB_MEMORY_REMAINING),
        memory_total=num(libvirt.VIR_DOMAIN_JOB_MEMORY_TOTAL),
        disk_processed=num(libvirt.VIR_DOMAIN_JOB_DISK_PROCESSED),
        disk_remaining=num(libvirt.VIR_DOMAIN_JOB_DISK_REMAINING),
        disk_total=num(libvirt.VIR_DOMAIN_JOB_DISK_TOTAL),
        iteration=num(libvirt.VIR_DOMAIN_JOB_MEMORY_ITERATION),
        dirty_rate=pages * page_size if pages is not None and page_size else pages,
        downtime_ms=num(libvirt.VIR_DOMAIN_JOB_DOWNTIME),
        elapsed_ms=num(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED),
        post_copy=num(libvirt.VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS) is not None
        and (num(libvirt.VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS) or 0) > 0,
    )


def job_stats(conn: libvirt.virConnect, uuid: str, *, completed: bool = False) -> JobStats | None:
    """The domain's current job (``completed``: its last completed one); None when there is no domain."""
    try:
        dom = _domain(conn, uuid)
        with translated():
            # KEEP_COMPLETED: a read does not delete them (a second look after a crash still finds them).
            flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
            stats = dom.jobStats(flags if completed else 0)
    except DomainNotFound:
        return None
    except InvalidState:  # shut off (a migrated-away source before it is undefined): no job
        return JobStats(active=False)
    return job_stats_from(stats)


def abort_job(conn: libvirt.virConnect, uuid: str) -> bool:
    """Abort the domain's running job (a migration). False: there was none (or no domain)."""
    try:
        dom = _domain(conn, uuid)
        with translated():
            dom.abortJob()
    except DomainNotFound:
        return False
    except LibvirtFailure as failure:
        if failure.code == libvirt.VIR_ERR_OPERATION_INVALID:  # "no job is active on the domain"
            return False
        raise
    return True


def start_post_copy(conn: libvirt.virConnect, uuid: str) -> None:
    """Switch the running migration to post-copy (it was started with post-copy allowed)."""
    dom = _domain(conn, uuid)
    with translated():
        dom.migrateStartPostCopy(0)


@dataclass(frozen=True)
class Presence:
    """Where a domain is, as far as one host knows."""

    exists: bool
    running: bool = False
    """Running (or paused by the user): the guest lives here."""
    migration_paused: bool = False
    """Paused by a migration: on the target, an incoming guest that is not live yet; on the source, the
    guest in its switch-over (or after a post-copy failure)."""
    persistent: bool = False


def presence(conn: libvirt.virConnect, uuid: str) -> Presence:
    try:
        dom = _domain(conn, uuid)
        with translated():
            state, reason = dom.state()
            persistent = bool(dom.isPersistent())
    except DomainNotFound:
        return Presence(exists=False)
    migration_paused = state == libvirt.VIR_DOMAIN_PAUSED and reason in (
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
    )
    running = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED) and not (
        migration_paused
    )
    return Presence(exists=True, running=running, migration_paused=migration_paused, persistent=persistent)


def disk_targets(conn: libvirt.virConnect, uuid: str, paths: Sequence[str]) -> dict[str, str]:
    """Path -> target device (vda …) of the running domain's writable disks whose source is one of
    ``paths`` (read-only disks — seed ISOs — are never copied: the target has its own)."""
    dom = _domain(conn, uuid)
    with translated():
        xml = dom.XMLDesc(0)
    wanted = set(paths)
    out: dict[str, str] = {}
    for disk in ET.fromstring(xml).iter("disk"):
        source, target = disk.find("source"), disk.find("target")
        if source is None or target is None or disk.find("readonly") is not None or disk.get("device") == "cdrom":
            continue
        path = source.get("file") or source.get("dev") or source.get("volume")
        if path in wanted and target.get("dev"):
            out[path] = str(target.get("dev"))
    return out

"""Host: keep one connection per Host and report what the host is and holds.

``host_status`` is the pure part: (spec, observation) -> status. ``HostController`` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import kubernetes
import libvirt

from vdc.api.conditions import READY, Condition, now_rfc3339, set_kstatus
from vdc.api.host import (
    REMOVE_ORPHANS_ANNOTATION,
    Host,
    HostDomainCounts,
    HostHealth,
    HostOrphans,
    HostResources,
    HostSpec,
    HostStatus,
    OrphanRemoval,
    ReservedResources,
    standby_intended,
)
from vdc.api.quantity import format_bytes_mi, format_millicores, to_bytes
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import Watch
from vdc.controllers.host_ha import HostHa
from vdc.controllers.host_power import HostPowerManager
from vdc.controllers.host_standby import REASON as STANDBY_REASON
from vdc.controllers.host_standby import last_reset, standby_step
from vdc.controllers.orphans import (
    POOL_PREFIX,
    LiveVmIndex,
    LiveVms,
    Orphans,
    Removal,
    domain_label,
    find_orphans,
    is_orphan_domain,
    orphans_event,
    orphans_status,
    volume_candidates,
    volume_label,
)
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter
from vdc.libvirt import domains as libvirt_domains
from vdc.libvirt import inventory, storage
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.credentials import CredentialsError, effective_uri
from vdc.libvirt.errors import HostUnreachable, LibvirtFailure, NotFound
from vdc.libvirt.host_facts import HostFacts, read_host_facts

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
STANDBY_POLL_SECONDS = 3.0
"""How often a host entering or leaving Standby is looked at."""
SUSPECT_POLL_SECONDS = 5.0
"""How often a Suspect host (and its Redfish power state) is looked at again."""


@dataclass(frozen=True)
class HostObservation:
    connected: bool
    error: str | None = None
    facts: HostFacts | None = None
    domains_total: int = 0
    domains_managed: int = 0
    domains_running: int = 0
    allocated_cpus: int = 0
    allocated_memory: int = 0
    reserved_cpu_millis: int = 0
    reserved_memory: int = 0
    last_seen: datetime | None = None
    orphans: HostOrphans | None = None
    """Orphan domains and volumes (None: not looked at; what the status said stays)."""


def _rfc3339(when: datetime | None) -> str | None:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z") if when else None


def allocatable(spec: HostSpec, facts: HostFacts) -> tuple[int, int]:
    """(vCPUs, memory bytes) offered to VMs: capacity less reservations, times overcommit."""
    # Decimal of the written ratio: 100 CPUs x 1.15 is 115, not float's 114.99999.
    cpus = int(max(0, facts.cpus - spec.reserved.cpus) * Decimal(str(spec.cpu_overcommit)))
    memory = int(max(0, facts.memory_bytes - to_bytes(spec.reserved.memory)) * Decimal(str(spec.memory_overcommit)))
    return cpus, memory


def reservable(spec: HostSpec, facts: HostFacts) -> tuple[int, int]:
    """(CPU millicores, memory bytes) VMs' reservations may guarantee: capacity less the host's own
    reservation. Overcommit never applies: a guarantee cannot be given twice."""
    cpus = max(0, facts.cpus - spec.reserved.cpus) * 1000
    memory = max(0, facts.memory_bytes - to_bytes(spec.reserved.memory))
    return cpus, memory


def host_status(
    spec: HostSpec, generation: int | None, observed: HostObservation, old: HostStatus | None
) -> HostStatus:
    conditions: list[Condition] = list(old.conditions) if old else []
    status = HostStatus(observed_generation=generation, conditions=conditions)
    if old is not None:
        # What the host was stays known while it is unreachable; only Ready says it is gone.
        status = old.model_copy(update={"observed_generation": generation})
    if observed.connected and observed.facts is not None:
        facts = observed.facts
        cpus, memory = allocatable(spec, facts)
        reservable_cpu, reservable_memory = reservable(spec, facts)
        status = status.model_copy(
            update={
                "hostname": facts.hostname,
                "host_uuid": facts.host_uuid,
                "libvirt_version": facts.libvirt_version,
                "hypervisor": facts.hypervisor,
                "hypervisor_version": facts.hypervisor_version,
                "capacity": HostResources(cpus=facts.cpus, memory=format_bytes_mi(facts.memory_bytes)),
                "allocatable": HostResources(cpus=cpus, memory=format_bytes_mi(memory)),
                "allocated": HostResources(
                    cpus=observed.allocated_cpus, memory=format_bytes_mi(observed.allocated_memory)
                ),
                "reservable": ReservedResources(
                    cpu=format_millicores(reservable_cpu), memory=format_bytes_mi(reservable_memory)
                ),
                "reserved": ReservedResources(
                    cpu=format_millicores(observed.reserved_cpu_millis),
                    memory=format_bytes_mi(observed.reserved_memory),
                ),
                "domains": HostDomainCounts(
                    total=observed.domains_total, managed=observed.domains_managed, running=observed.domains_running
                ),
                "phase": "Maintenance" if spec.maintenance else "Ready",
            }
        )
        if observed.orphans is not None:
            status = status.model_copy(update={"orphans": observed.orphans})
        conditions = set_kstatus(
            status.conditions,
            "Current",
            "Connected",
            f"libvirt {facts.libvirt_version} on {facts.hostname} answers",
            observed_generation=generation,
        )
    else:
        reason = "Connecting" if old is None or old.phase in (None, "Connecting") else "Disconnected"
        status = status.model_copy(update={"phase": "Connecting" if reason == "Connecting" else "NotReady"})
        message = f"cannot reach libvirt: {observed.error}" if observed.error else "connecting to libvirt"
        conditions = set_kstatus(status.conditions, "NotReady", reason, message, observed_generation=generation)
    status = status.model_copy(update={"conditions": conditions})
    if observed.last_seen is not None:
        status = status.model_copy(update={"last_seen": _rfc3339(observed.last_seen)})
    return status


class HostController:
    """Reconciles Host objects: connection, facts, counts, status."""

    def __init__(
        self,
        hosts: ObjectCache,
        vms: ObjectCache,
        connections: ConnectionManager,
        writer: KubeWriter,
        *,
        pools: ObjectCache | None = None,
        namespaces: Sequence[str] = (),
        cluster: ClusterView | None = None,
    ) -> None:
        """``pools``: the StoragePool cache (volumes they publish are never orphans); ``namespaces``: the
        namespaces the operator watches (empty: all), outside which nothing is taken for an orphan;
        ``cluster``: the view whose ledger says what is allocated, and where the facts read are kept."""
        self.hosts = hosts
        self.vms = vms
        self.connections = connections
        self.writer = writer
        self.pools = pools if pools is not None else ObjectCache()
        self.namespaces = tuple(namespaces)
        self.live_vms = LiveVmIndex(self.namespaces)
        self.live_vms.follow(vms, self.pools)
        self.cluster = cluster if cluster is not None else ClusterView(hosts=hosts, vms=vms)
        self.on_health_change: Callable[[str, str], None] = lambda host, state: None
        """Called with (host, new state) when HA's judgement of a host changes (its VMs look again)."""
        self.power = HostPowerManager(writer)
        self.ha = HostHa(vms, self.pools, connections, writer, lambda host, state: self.on_health_change(host, state))

    def live(self) -> LiveVms:
        """The live VMs (and published volumes) orphans are judged against, as the caches hold them now
        (kept from their changes: ``LiveVms.of`` walked every VM body at every Host reconcile)."""
        return self.live_vms.live()

    async def _effective_uri(self, name: str, host: Host) -> str:
        """The URI with credential files from the Secret written out (none needed for unix sockets)."""
        ref = host.spec.credentials_secret_ref
        if ref is None:
            return host.spec.uri
        data = await self.writer.secret_data(ref.namespace, ref.name)
        return await asyncio.to_thread(effective_uri, name, host.spec.uri, data)

    def facts(self, host: str) -> HostFacts | None:
        return self.cluster.facts(host)

    async def reconcile(self, key: Key) -> float | None:
        body = self.hosts.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            await self.connections.remove(key[1])
            self.cluster.note_facts(key[1], None)
            return None
        host = Host.model_validate(body)
        name = key[1]
        try:
            uri = await self._effective_uri(name, host)
        except (CredentialsError, kubernetes.client.ApiException) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            message = f"host credentials: {reason}; fix spec.credentialsSecretRef or the Secret"
            generation = body["metadata"].get("generation")
            status = host_status(host.spec, generation, HostObservation(connected=False, error=message), host.status)
            conds = set_kstatus(
                status.conditions, "Failed", "CredentialsInvalid", message, observed_generation=generation
            )
            wire = status.model_copy(update={"conditions": conds}).to_wire()
            if _worth_writing(body.get("status") or {}, wire) and (
                sent := await self.writer.patch_status(Host.KIND, body, wire)
            ):
                self.hosts.note_status(key, sent)
                await self.writer.event(Host.KIND, body, "CredentialsInvalid", message, warning=True)
            return RESYNC_SECONDS
        conn = await self.connections.ensure(name, uri)
        observation = HostObservation(connected=False, error=conn.last_error)
        token = (body["metadata"].get("annotations") or {}).get(REMOVE_ORPHANS_ANNOTATION)
        removal: Removal | None = None
        old_orphans = host.status.orphans if host.status else None
        last_removal: OrphanRemoval | None = old_orphans.last_removal if old_orphans else None
        orphans: HostOrphans | None = None
        if conn.connected:
            try:
                facts = self.cluster.facts(name)
                if facts is None:
                    facts = await conn.call(read_host_facts)
                    self.cluster.note_facts(name, facts)
                # An admin asked: remove what is orphaned now, then look again. Once per request: a request
                # already answered in status (an event came before the annotation's removal) is not redone.
                if token is not None and (last_removal is None or last_removal.token != token):
                    removal = await self._remove_orphans(name, conn)
                    last_removal = removal.status(token, _rfc3339(datetime.now(UTC)) or "")
                live = self.live()
                seen = await conn.call(lambda c: _observe(c, live))
                if seen.orphans is not None:
                    orphans = orphans_status(seen.orphans, last_removal)
                elif old_orphans is not None or removal is not None:
                    orphans = (old_orphans or HostOrphans()).model_copy(update={"last_removal": last_removal})
                used = self.cluster.allocated(name)  # the ledger: what the scheduler and metrics read too
                observation = HostObservation(
                    connected=True,
                    facts=facts,
                    domains_total=seen.total,
                    domains_managed=seen.managed,
                    domains_running=seen.running,
                    allocated_cpus=used.vcpus,
                    allocated_memory=used.memory_bytes,
                    reserved_cpu_millis=used.cpu_reservation_millis,
                    reserved_memory=used.memory_reservation_bytes,
                    last_seen=conn.last_seen,
                    orphans=orphans,
                )
            except LibvirtFailure as exc:
                self.cluster.note_facts(name, None)
                observation = HostObservation(connected=False, error=str(exc))
        else:
            self.cluster.note_facts(name, None)
        status = host_status(host.spec, body["metadata"].get("generation"), observation, host.status)
        power = await self.power.observe(name, host, body)
        step = standby_step(
            intended=standby_intended(body),
            power_managed=host.spec.power_management is not None,
            connected=observation.connected,
            power=power.state if power is not None else None,
            vms_here=len(self.cluster.vms_on(name)),
            previous_phase=host.status.phase if host.status else None,
            last=last_reset(power.to_wire() if power is not None else None),
        )
        if step.reset is not None and power is not None:
            power = await self.power.send(name, host, body, power, step.reset, STANDBY_REASON)
        old_health = host.status.ha if host.status else None
        if step.phase is not None and not observation.connected:  # off on purpose: not a failure to judge
            since = old_health.since if old_health is not None and old_health.state == "Standby" else now_rfc3339()
            health, fence = HostHealth(state="Standby", since=since, message=step.message), False
        else:
            health, fence = await self.ha.judge(name, host, conn, power, observation.connected)
        if fence and power is not None:
            power = await self.power.fence(name, host, body, power)
        status = status.model_copy(update={"power": power, "ha": health})
        if step.phase is not None:
            generation = body["metadata"].get("generation")
            conds = status.conditions
            if not observation.connected:
                conds = set_kstatus(conds, "NotReady", step.phase, step.message, observed_generation=generation)
            status = status.model_copy(update={"phase": step.phase, "conditions": conds})
        if health.state == "Recovering":  # never Ready before the stale domains are gone
            generation = body["metadata"].get("generation")
            conds = set_kstatus(status.conditions, "NotReady", "Recovering", health.message,
                                observed_generation=generation)  # fmt: skip
            status = status.model_copy(update={"phase": "NotReady", "conditions": conds})
        wire = status.to_wire()
        old_wire = body.get("status") or {}
        if _worth_writing(old_wire, wire) and (sent := await self.writer.patch_status(Host.KIND, body, wire)):
            self.hosts.note_status(key, sent)
            if old_wire.get("phase") != wire.get("phase"):
                ready = next(c for c in wire["conditions"] if c["type"] == READY)
                await self.writer.event(
                    Host.KIND,
                    body,
                    f"Host{wire.get('phase')}",
                    ready["message"],
                    warning=wire.get("phase") == "NotReady",
                )
            if removal is None and status.orphans is not None:
                said = orphans_event(old_orphans, status.orphans, name)
                if said is not None:
                    await self.writer.event(Host.KIND, body, said[0], said[1], warning=said[2])
        if removal is not None and token is not None:
            await self._report_removal(body, name, removal, token)
        elif token is not None and last_removal is not None and last_removal.token == token:
            await self.writer.remove_annotation(Host.KIND, body, REMOVE_ORPHANS_ANNOTATION, token)
        await self.power.finish(name, body)
        await self.ha.report_change(body, name, host.status.ha if host.status else None, health)
        if fence:
            return 1.0  # the power state soon says Off
        if step.phase in ("EnteringStandby", "Waking"):
            return STANDBY_POLL_SECONDS
        if health.state in ("Suspect", "Failed", "Recovering") or (health.state == "Fenced" and not conn.connected):
            return SUSPECT_POLL_SECONDS
        return RESYNC_SECONDS

    async def _remove_orphans(self, name: str, conn: HostConnection) -> Removal:
        """Destroy and undefine the orphan domains, then delete the orphan volumes no domain uses (on this
        host or, for shared pools, on any other connected host). Each is re-checked just before removal."""
        live = self.live()
        before = (await conn.call(lambda c: _observe(c, live))).orphans or Orphans()
        domains = await conn.call(lambda c: _remove_orphan_domains(c, live))
        elsewhere: frozenset[str] = frozenset()
        for other in self.connections.names():
            other_conn = self.connections.get(other)
            if other != name and other_conn is not None and other_conn.connected:
                try:
                    elsewhere |= await other_conn.call(inventory.all_disk_references)
                except LibvirtFailure as exc:
                    log.info("host %s: disk references not read (%s); its domains cannot be checked", other, exc)
        live = self.live()
        volumes = await conn.call(lambda c: _remove_orphan_volumes(c, live, elsewhere))
        removal = Removal(
            domains=domains.domains,
            volumes=volumes.volumes,
            failed=domains.failed + volumes.failed,
        )
        done = {*removal.domains, *removal.volumes, *(f.split(": ", 1)[0] for f in removal.failed)}
        kept = [domain_label(d) for d in before.domains] + [volume_label(v) for v in before.volumes]
        return replace(removal, kept=tuple(k for k in kept if k not in done))

    async def _report_removal(self, body: dict[str, Any], name: str, removal: Removal, token: str) -> None:
        """The Event naming what was removed, then the annotation cleared (only if it still holds ``token``:
        a newer request set meanwhile is left for the next reconcile)."""
        message = removal.message()
        log.info("host %s: orphans removal %r: %s", name, token, message)
        await self.writer.event(Host.KIND, body, "OrphansRemoved", message, warning=bool(removal.failed))
        await self.writer.remove_annotation(Host.KIND, body, REMOVE_ORPHANS_ANNOTATION, token)


def _worth_writing(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """lastSeen or power.checkedAt alone moving (they do on every resync) is not worth an API write."""

    def significant(status: dict[str, Any]) -> dict[str, Any]:
        power = {k: v for k, v in (status.get("power") or {}).items() if k != "checkedAt"}
        return {**{k: v for k, v in status.items() if k != "lastSeen"}, "power": power}

    return significant(new) != significant(old)


@dataclass(frozen=True)
class _Seen:
    total: int
    managed: int
    running: int
    orphans: Orphans | None
    """None: not counted this time (what the status said stays)."""


def _observe(conn: libvirt.virConnect, live: LiveVms) -> _Seen:
    """Domain counts and orphans, cheaply: domains with owners read only where the UUID is unknown,
    volume names per pool of ours; disk sources and volume details only when a volume looks orphaned."""
    domains = inventory.list_domains(conn, known=live.uids)
    managed = [d for d in domains if d.uuid in live.uids]
    counts = len(domains), len(managed), sum(1 for d in managed if d.active)
    try:
        pools = inventory.our_pools(conn, POOL_PREFIX)
        volumes = inventory.list_volumes(conn, pools)
        candidates = volume_candidates(volumes, live)
        if candidates:  # does anything still use them? what domains' disks name, what volumes are backed by
            domains = inventory.list_domains(conn, known=live.uids, disks=True)
            volumes = inventory.list_volumes(conn, pools, detailed={v.pool for v in candidates})
        orphans: Orphans | None = find_orphans(domains, volumes, live)
    except HostUnreachable:
        raise
    except LibvirtFailure as exc:  # a pool that fails to list: the host is fine, the orphan count waits
        log.warning("orphans not counted this time: %s", exc)
        orphans = None
    return _Seen(*counts, orphans=orphans)


@dataclass(frozen=True)
class _Removed:
    domains: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def _remove_orphan_domains(conn: libvirt.virConnect, live: LiveVms) -> _Removed:
    removed, failed = [], []
    for domain in find_orphans(inventory.list_domains(conn, known=live.uids), (), live).domains:
        label = domain_label(domain)
        try:
            if not is_orphan_domain(replace(domain, owner=inventory.owner_of(conn, domain.uuid)), live):
                continue  # its metadata changed since it was listed
            if libvirt_domains.remove(conn, domain.uuid):
                removed.append(label)
        except NotFound:
            continue
        except HostUnreachable:
            raise
        except LibvirtFailure as exc:
            failed.append(f"{label}: {exc}")
    return _Removed(domains=tuple(removed), failed=tuple(failed))


def _remove_orphan_volumes(conn: libvirt.virConnect, live: LiveVms, elsewhere: frozenset[str]) -> _Removed:
    """Never a volume any defined domain uses: here, orphan domains that could not be removed count too."""
    domains = inventory.list_domains(conn, known=live.uids, disks=True)
    in_use = elsewhere.union(*(d.disks for d in domains))
    pools = inventory.our_pools(conn, POOL_PREFIX)
    candidates = volume_candidates(inventory.list_volumes(conn, pools), live)
    volumes = inventory.list_volumes(conn, pools, detailed={v.pool for v in candidates})
    removed, failed = [], []
    for volume in find_orphans(domains, volumes, live, in_use).volumes:
        label = volume_label(volume)
        try:
            if storage.delete_volume(conn, volume.pool, volume.name):
                removed.append(label)
        except NotFound:
            continue
        except HostUnreachable:
            raise
        except LibvirtFailure as exc:
            failed.append(f"{label}: {exc}")
    return _Removed(volumes=tuple(removed), failed=tuple(failed))


WATCHES: tuple[Watch, ...] = ()
"""A Host is requeued by its own events and by its libvirt connection's (see vdc.handlers), nothing else."""

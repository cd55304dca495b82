"""Tenancy decisions over the operator's object caches: builds the pure functions' inputs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from vdc.api.appliance import Appliance, ApplianceSpec
from vdc.api.common import AllowedNamespaces
from vdc.api.computequota import QuotaAmounts
from vdc.api.host import HostFiles
from vdc.api.storagepool import StoragePoolSpec
from vdc.api.virtualmachine import VirtualMachine
from vdc.kube.cache import ObjectCache
from vdc.tenancy.access import (
    ApplianceGrant,
    Tenant,
    VolumeUse,
    host_files_refusal,
    is_access,
    pool_refusal,
    volume_access,
)
from vdc.tenancy.quota import Usage, exceeded, total, vm_usage
from vdc.tenancy.vm_access import Infrastructure, VmAccess, check_vm

HostOf = Callable[[dict[str, Any]], str | None]
T = TypeVar("T")
MEMO_LIMIT = 100_000
"""Parsed objects remembered (one entry per object and kind of parse) before the memo starts afresh."""


class TenancyView:
    def __init__(
        self,
        *,
        namespaces: ObjectCache,
        hosts: ObjectCache,
        pools: ObjectCache,
        switches: ObjectCache,
        appliances: ObjectCache,
        vms: ObjectCache,
        quotas: ObjectCache,
    ) -> None:
        self.namespaces = namespaces
        self.hosts = hosts
        self.pools = pools
        self.switches = switches
        self.appliances = appliances
        self.vms = vms
        self.quotas = quotas
        self._memo: dict[tuple[str, str], tuple[str, Any]] = {}

    def _parsed(self, kind: str, body: dict[str, Any], parse: Callable[[dict[str, Any]], T], stamp: str = "") -> T:
        """``parse(body)``, remembered for the object's current version (and ``stamp``, what else the parse
        read): a reconcile reads every pool and switch, a quota check every VM of the namespace, and
        parsing each once per version keeps that cheap. One entry per object: a new version replaces it."""
        meta = body["metadata"]
        version = meta.get("resourceVersion")
        if not version:
            return parse(body)
        key, seen = (kind, str(meta.get("uid"))), f"{version}|{stamp}"
        cached = self._memo.get(key)
        if cached is not None and cached[0] == seen:
            result: T = cached[1]
            return result
        if len(self._memo) > MEMO_LIMIT:  # objects deleted long ago: start afresh
            self._memo.clear()
        value = parse(body)
        self._memo[key] = (seen, value)
        return value

    def tenant(self, namespace: str) -> Tenant:
        body = self.namespaces.get(("", namespace)) or {}
        return Tenant(namespace, dict((body.get("metadata") or {}).get("labels") or {}))

    # --- access ------------------------------------------------------------------------------
    def pool_specs(self) -> dict[str, StoragePoolSpec]:
        out = {}
        for body in self.pools:
            spec = self._parsed("pool", body, _pool_spec)
            if spec is not None:  # else the pool controller reports it
                out[body["metadata"]["name"]] = spec
        return out

    def appliance_grants(self) -> dict[tuple[str, str], ApplianceGrant]:
        out = {}
        for body in self.appliances:
            meta = body["metadata"]
            grant = self._parsed("appliance", body, _appliance_grant)
            if grant is not None:
                out[(str(meta["namespace"]), str(meta["name"]))] = grant
        return out

    def _adopted_by(self, pool: str, volume: str, exclude_uid: str) -> str | None:
        """The namespace of another VM that adopted this volume (its status says so), if any."""
        for body in self.vms:
            if body["metadata"].get("uid") == exclude_uid:
                continue
            for disk in (body.get("status") or {}).get("disks") or []:
                if disk.get("access") == "Adopted" and disk.get("pool") == pool and disk.get("volume") == volume:
                    return str(body["metadata"]["namespace"])
        return None

    def check_vm(self, vm: VirtualMachine) -> VmAccess:
        switches = {}
        for body in self.switches:
            allowed = self._parsed("switch", body, _switch_allowance)
            if allowed is not None:
                switches[body["metadata"]["name"]] = allowed
        infra = Infrastructure(
            pools=self.pool_specs(),
            switches=switches,
            appliances=self.appliance_grants(),
            adopted_by=functools.partial(self._adopted_by, exclude_uid=str(vm.metadata.get("uid"))),
        )
        return check_vm(vm, self.tenant(str(vm.metadata["namespace"])), infra)

    def host_files_refusal(self, host: str, namespace: str, paths: Sequence[str]) -> str | None:
        """Why ``host`` may not serve these files to the namespace (None: it may)."""
        if not paths:
            return None
        body = self.hosts.get(("", host))
        if body is None:
            return f"Host {host} does not exist"
        refused = host_files_refusal(paths, self._parsed("host", body, host_files_of), self.tenant(namespace))
        return f"Host {host}: {refused}" if refused else None

    def any_host_serves_files(self, namespace: str, paths: Sequence[str]) -> bool:
        """Whether some Host lets the namespace name these files: the first that does answers (a VM's every
        reconcile asks, and walking every Host each time was an eighth of the operator's CPU at rest)."""
        return any(not self.host_files_refusal(b["metadata"]["name"], namespace, paths) for b in self.hosts)

    def host_file_dirs(self, host: str) -> tuple[str, ...]:
        body = self.hosts.get(("", host)) or {}
        return tuple(((body.get("spec") or {}).get("hostFiles") or {}).get("allowedPaths") or ())

    def appliance_refusals(self, appliance: Appliance) -> list[str]:
        """What an Appliance may not use: its pool, a host file, a volume it imports from."""
        namespace = str(appliance.metadata["namespace"])
        tenant = self.tenant(namespace)
        pools = self.pool_specs()
        out = []
        pool = pools.get(appliance.spec.storage_pool)
        if pool is not None and (refused := pool_refusal(appliance.spec.storage_pool, pool, tenant)):
            out.append(f"spec.storagePool: {refused}")
        source = appliance.spec.source
        if source.host_path is not None:
            hp = source.host_path
            if refused := self.host_files_refusal(hp.host, namespace, [hp.path]):
                out.append(f"spec.source.hostPath: {refused}")
        if source.volume is not None and (spec := pools.get(source.volume.pool)) is not None:
            use = VolumeUse(source.volume.pool, source.volume.name, "read")
            got = volume_access(use, spec, tenant, self.appliance_grants())
            if not is_access(got):
                out.append(f"spec.source.volume: {got}")
        return out

    # --- quota -------------------------------------------------------------------------------
    def quotas_of(self, namespace: str) -> dict[str, QuotaAmounts]:
        out = {}
        for body in self.quotas.in_namespace(namespace):
            meta = body["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            try:
                out[str(meta["name"])] = QuotaAmounts.model_validate((body.get("spec") or {}).get("hard") or {})
            except ValidationError:
                continue
        return out

    def public_switches(self) -> set[str]:
        return {b["metadata"]["name"] for b in self.switches if (b.get("spec") or {}).get("public")}

    def usage(self, namespace: str, host_of: HostOf, exclude_uid: str | None = None) -> Usage:
        """What the namespace's placed VMs take."""
        public = frozenset(self.public_switches())
        return total(
            self._usage_of(body, public)
            for body in self.vms.in_namespace(namespace)
            if body["metadata"].get("uid") != exclude_uid and host_of(body) is not None
        )

    def _usage_of(self, body: dict[str, Any], public: frozenset[str]) -> Usage:
        """What one VM takes (remembered per VM version and set of public switches)."""
        return self._parsed(
            "usage", body, lambda b: vm_usage(b.get("spec") or {}, b.get("status"), public), ",".join(sorted(public))
        )

    def quota_refusal(self, body: dict[str, Any], host_of: HostOf) -> str | None:
        """Why placing this VM would exceed its namespace's ComputeQuotas (None: it fits, or none is set)."""
        namespace = str(body["metadata"]["namespace"])
        quotas = self.quotas_of(namespace)
        if not quotas:
            return None
        uid = str(body["metadata"].get("uid"))
        adding = vm_usage(body.get("spec") or {}, body.get("status"), self.public_switches())
        return exceeded(quotas, self.usage(namespace, host_of, exclude_uid=uid), adding)


def _pool_spec(body: dict[str, Any]) -> StoragePoolSpec | None:
    try:
        return StoragePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None


def _switch_allowance(body: dict[str, Any]) -> AllowedNamespaces | None:
    try:
        return AllowedNamespaces.model_validate((body.get("spec") or {}).get("allowedNamespaces") or {})
    except ValidationError:
        return None


def _appliance_grant(body: dict[str, Any]) -> ApplianceGrant | None:
    meta = body["metadata"]
    try:
        spec = ApplianceSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    return ApplianceGrant(str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", "")), spec.shared_with)


def host_files_of(host: dict[str, Any]) -> HostFiles:
    """A Host body's spec.hostFiles (an unreadable one allows nothing)."""
    try:
        return HostFiles.model_validate((host.get("spec") or {}).get("hostFiles") or {})
    except ValidationError:
        return HostFiles()

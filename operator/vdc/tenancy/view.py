"""Tenancy decisions over the operator's object caches: builds the pure functions' inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from vdc.api.appliance import Appliance, ApplianceSpec
from vdc.api.common import AllowedNamespaces
from vdc.api.computequota import QuotaAmounts
from vdc.api.host import HostFiles
from vdc.api.storagepool import StoragePoolSpec
from vdc.api.virtualmachine import VirtualMachine
from vdc.kube.cache import ObjectCache
from vdc.tenancy.access import ApplianceGrant, Tenant, VolumeUse, host_files_refusal, pool_refusal, volume_access
from vdc.tenancy.quota import Usage, exceeded, total, vm_usage
from vdc.tenancy.vm_access import Infrastructure, VmAccess, check_vm

HostOf = Callable[[dict[str, Any]], str | None]


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

    def tenant(self, namespace: str) -> Tenant:
        body = self.namespaces.get(("", namespace)) or {}
        return Tenant(namespace, dict((body.get("metadata") or {}).get("labels") or {}))

    # --- access ------------------------------------------------------------------------------
    def pool_specs(self) -> dict[str, StoragePoolSpec]:
        out = {}
        for body in self.pools:
            try:
                out[body["metadata"]["name"]] = StoragePoolSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue  # the pool controller reports it
        return out

    def appliance_grants(self) -> dict[tuple[str, str], ApplianceGrant]:
        out = {}
        for body in self.appliances:
            meta = body["metadata"]
            try:
                spec = ApplianceSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                continue
            key = (str(meta["namespace"]), str(meta["name"]))
            out[key] = ApplianceGrant(key[0], key[1], str(meta.get("uid", "")), spec.shared_with)
        return out

    def _adopted(self, exclude_uid: str) -> dict[tuple[str, str], str]:
        """(pool, volume) -> namespace, for volumes other VMs adopted (status says so)."""
        out = {}
        for body in self.vms:
            if body["metadata"].get("uid") == exclude_uid:
                continue
            for disk in (body.get("status") or {}).get("disks") or []:
                if disk.get("access") == "Adopted" and disk.get("pool") and disk.get("volume"):
                    out[(disk["pool"], disk["volume"])] = str(body["metadata"]["namespace"])
        return out

    def check_vm(self, vm: VirtualMachine) -> VmAccess:
        uses_volumes = any(d.source.volume is not None or (d.source.clone and d.source.clone.base_volume)
                           for d in vm.spec.disks)  # fmt: skip
        switches = {}
        for body in self.switches:
            raw = (body.get("spec") or {}).get("allowedNamespaces")
            try:
                switches[body["metadata"]["name"]] = AllowedNamespaces.model_validate(raw or {})
            except ValidationError:
                continue
        infra = Infrastructure(
            pools=self.pool_specs(),
            switches=switches,
            appliances=self.appliance_grants(),
            adopted=self._adopted(str(vm.metadata.get("uid"))) if uses_volumes else {},
        )
        return check_vm(vm, self.tenant(str(vm.metadata["namespace"])), infra)

    def host_files_refusal(self, host: str, namespace: str, paths: Sequence[str]) -> str | None:
        """Why ``host`` may not serve these files to the namespace (None: it may)."""
        if not paths:
            return None
        body = self.hosts.get(("", host))
        if body is None:
            return f"Host {host} does not exist"
        try:
            files = HostFiles.model_validate((body.get("spec") or {}).get("hostFiles") or {})
        except ValidationError:
            files = HostFiles()
        refused = host_files_refusal(paths, files, self.tenant(namespace))
        return f"Host {host}: {refused}" if refused else None

    def hosts_serving_files(self, namespace: str, paths: Sequence[str]) -> list[str]:
        """Hosts that let the namespace name these files."""
        return [
            b["metadata"]["name"]
            for b in self.hosts
            if not self.host_files_refusal(b["metadata"]["name"], namespace, paths)
        ]

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
            if got not in ("Owned", "Adopted", "Published", "Appliance"):
                out.append(f"spec.source.volume: {got}")
        return out

    # --- quota -------------------------------------------------------------------------------
    def quotas_of(self, namespace: str) -> dict[str, QuotaAmounts]:
        out = {}
        for body in self.quotas:
            meta = body["metadata"]
            if meta.get("namespace") != namespace or meta.get("deletionTimestamp"):
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
        public = self.public_switches()
        return total(
            vm_usage(body.get("spec") or {}, body.get("status"), public)
            for body in self.vms
            if body["metadata"].get("namespace") == namespace
            and body["metadata"].get("uid") != exclude_uid
            and host_of(body) is not None
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

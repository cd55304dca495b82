"""Who may use what: pure decisions over typed inputs. No I/O, no caches.

Namespaces are tenants. A namespaced object may use only what its namespace owns or what a cluster
admin gave it: pools and switches through ``allowedNamespaces``, volumes through ownership,
publication or adoption, appliances through ``sharedWith``, host files through a Host's
``hostFiles``. Every function returns ``None`` when allowed, else a message that says what was
refused and what would allow it.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeGuard, get_args

from vdc.api.common import AllowedNamespaces, SharedWith
from vdc.api.host import HostFiles
from vdc.api.storagepool import StoragePoolSpec
from vdc.api.virtualmachine import DiskAccess
from vdc.scheduler.selectors import matches

VolumeAccess = DiskAccess
ACCESSES: frozenset[str] = frozenset(get_args(VolumeAccess))


def is_access(verdict: VolumeAccess | str) -> TypeGuard[VolumeAccess]:
    """Whether a :func:`volume_access` verdict grants the use (else it is the refusal's message)."""
    return verdict in ACCESSES


_OWNED = re.compile(r"^(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)_(?P<vm>[a-z0-9][-a-z0-9.]*)_[a-z0-9-]+\.(qcow2|iso|ova)$")
_APPLIANCE_IMAGE = re.compile(r"^appliance_(?P<ns>[a-z0-9-]+)_(?P<name>[a-z0-9][-a-z0-9.]*)_(?P<uid8>[0-9a-f-]{8})_")


@dataclass(frozen=True)
class Tenant:
    """A namespace and its labels (what allowedNamespaces selectors look at)."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


def allows(allowed: AllowedNamespaces | SharedWith | None, tenant: Tenant, own_namespace: str | None = None) -> bool:
    """Whether ``allowed`` lets ``tenant`` in. ``None`` lets nobody in; ``Same`` only ``own_namespace``."""
    if allowed is None:
        return False
    match allowed.from_:
        case "All":
            return True
        case "Same":
            return tenant.namespace == own_namespace
        case "Selector":
            return allowed.selector is not None and matches(allowed.selector, tenant.labels)
        case _:
            return False


def owner_namespace(volume: str) -> str | None:
    """The namespace owning a volume the operator created for a VM (``<ns>_<vm>_<disk>.<ext>``).

    Namespace, VM and disk names cannot hold ``_``, so the name says whose it is and no tenant can
    make a volume whose name claims another namespace."""
    found = _OWNED.match(volume)
    return found.group("ns") if found else None


def appliance_of_image(volume: str) -> tuple[str, str, str] | None:
    """(namespace, appliance, uid prefix) of an appliance base image, else None."""
    found = _APPLIANCE_IMAGE.match(volume)
    return (found.group("ns"), found.group("name"), found.group("uid8")) if found else None


@dataclass(frozen=True)
class ApplianceGrant:
    """An appliance as tenancy sees it: where it lives, its uid and whom it is shared with."""

    namespace: str
    name: str
    uid: str
    shared_with: SharedWith


def appliance_refusal(appliance: ApplianceGrant, tenant: Tenant) -> str | None:
    if allows(appliance.shared_with, tenant, appliance.namespace):
        return None
    return (
        f"Appliance {appliance.namespace}/{appliance.name} is not shared with namespace {tenant.namespace} "
        "(its spec.sharedWith)"
    )


def pool_refusal(pool_name: str, pool: StoragePoolSpec, tenant: Tenant) -> str | None:
    """Whether the tenant may create volumes in (or import appliances into) the pool."""
    if allows(pool.allowed_namespaces, tenant):
        return None
    return f"StoragePool {pool_name} does not allow namespace {tenant.namespace} (its spec.allowedNamespaces)"


def switch_refusal(switch_name: str, allowed: AllowedNamespaces, tenant: Tenant) -> str | None:
    if allows(allowed, tenant):
        return None
    return f"VirtualSwitch {switch_name} does not allow namespace {tenant.namespace} (its spec.allowedNamespaces)"


@dataclass(frozen=True)
class VolumeUse:
    """One use of an existing volume by a namespace: attached as a disk, cloned, or read by an import."""

    pool: str
    volume: str
    mode: Literal["attach", "attach-read-only", "clone", "read"]


def volume_access(
    use: VolumeUse,
    pool: StoragePoolSpec,
    tenant: Tenant,
    appliances: Mapping[tuple[str, str], ApplianceGrant],
    adopted_by: Callable[[], str | None] = lambda: None,
) -> VolumeAccess | str:
    """Why the tenant may use the volume (``VolumeAccess``), or a message saying why not.

    ``appliances``: the cluster's appliances by (namespace, name). ``adopted_by``: the namespace of
    another VM that already uses this unowned volume, if any (one tenant's adoption is exclusive);
    asked only when the volume is one nobody owns, published or built."""
    what = f"volume {use.volume} in pool {use.pool}"
    writable = use.mode == "attach"
    owner = owner_namespace(use.volume)
    if owner == tenant.namespace:
        return "Owned"
    published = next((p for p in pool.published_volumes if p.name == use.volume), None)
    if published is not None and allows(published.allowed_namespaces, tenant):
        if writable:
            return f"{what} is published read-only: attach it with readOnly: true, or clone it"
        return "Published"
    image = appliance_of_image(use.volume)
    if image is not None:
        grant = appliances.get(image[:2])
        if grant is None or not grant.uid.startswith(image[2]):
            return f"{what} is the base image of an appliance that no longer exists"
        refused = appliance_refusal(grant, tenant)
        if refused is not None:
            return f"{what} is a base image of {refused}"
        if writable:
            return f"{what} is a base image of Appliance {grant.namespace}/{grant.name}: clone it or attach it readOnly"
        return "Appliance"
    if owner is not None:
        return f"{what} belongs to namespace {owner}"
    other = adopted_by()
    if other is not None and other != tenant.namespace:
        return f"{what} is already adopted by namespace {other}"
    if allows(pool.adoption_namespaces, tenant):
        return "Adopted"
    return (
        f"{what} is owned by no namespace; a cluster admin may let namespace {tenant.namespace} adopt it "
        f"(StoragePool {use.pool} spec.adoptionNamespaces) or publish it (spec.publishedVolumes)"
    )


def host_files_refusal(paths: Sequence[str], host_files: HostFiles, tenant: Tenant) -> str | None:
    """Whether every path lies (as text) under a directory the host declares for the tenant.

    Symlinks can only be resolved on the host: the vdc qemu hook checks them again at every start."""
    if not paths:
        return None
    if not host_files.allowed_paths:
        return "it declares no spec.hostFiles.allowedPaths"
    if not allows(host_files.allowed_namespaces, tenant):
        return f"its spec.hostFiles.allowedNamespaces does not allow namespace {tenant.namespace}"
    outside = [p for p in paths if not any(is_under(p, d) for d in host_files.allowed_paths)]
    if outside:
        return f"{', '.join(outside)} outside its spec.hostFiles.allowedPaths ({', '.join(host_files.allowed_paths)})"
    return None


@functools.lru_cache(maxsize=4096)
def is_under(path: str, directory: str) -> bool:
    """Whether ``path`` names something strictly inside ``directory`` (both normalised lexically). Kept per
    pair: every placement asks it for the VM's files against every host's directories."""
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    if not path.startswith("/") or not directory.startswith("/"):
        return False
    prefix = directory if directory.endswith("/") else directory + "/"
    return path.startswith(prefix) and path != directory

"""API types of vdc.dev/v1alpha1: pydantic models that are the single source of truth.

The CRD YAML under ``crds/`` is generated from these models (``make crds``). Nothing in this
package does I/O.
"""

from vdc.api.appliance import Appliance
from vdc.api.computecluster import ComputeCluster
from vdc.api.computequota import ComputeQuota
from vdc.api.host import Host
from vdc.api.meta import GROUP, VERSION, KindInfo
from vdc.api.migration import MigrationPolicy, VirtualMachineMigration
from vdc.api.storagepool import StoragePool
from vdc.api.virtualmachine import VirtualMachine
from vdc.api.virtualswitch import VirtualSwitch

ALL_KINDS: tuple[
    type[
        Host
        | StoragePool
        | VirtualSwitch
        | Appliance
        | VirtualMachine
        | ComputeQuota
        | VirtualMachineMigration
        | MigrationPolicy
        | ComputeCluster
    ],
    ...,
] = (
    Host,
    StoragePool,
    VirtualSwitch,
    Appliance,
    VirtualMachine,
    ComputeQuota,
    VirtualMachineMigration,
    MigrationPolicy,
    ComputeCluster,
)

__all__ = [
    "ALL_KINDS",
    "GROUP",
    "VERSION",
    "Appliance",
    "ComputeCluster",
    "ComputeQuota",
    "Host",
    "KindInfo",
    "MigrationPolicy",
    "StoragePool",
    "VirtualMachine",
    "VirtualMachineMigration",
    "VirtualSwitch",
]

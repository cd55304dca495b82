"""A NIC's status: the IPAM's address first, then what the guest leased; the host device while it runs."""

from __future__ import annotations

from vdc.api.virtualmachine import InterfaceStatus
from vdc.controllers.vm_nics import nic_status_observed
from vdc.libvirt.domain_xml import DomainConfig, InterfaceConfig, OwnerMetadata
from vdc.libvirt.domains import DomainObservation

UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11"
MAC = "52:54:00:aa:bb:01"
NIC = InterfaceStatus(name="eth0", mac_address=MAC, ip_addresses=["10.77.0.10"], switch="lan")


def running(target_dev: str | None) -> DomainObservation:
    config = DomainConfig(
        name="ns_vm", uuid=UID, owner=OwnerMetadata(namespace="ns", name="vm", uid=UID), memory_kib=65536,
        current_memory_kib=65536, interfaces=(InterfaceConfig(network="vdc-lan", mac=MAC, target_dev=target_dev),),
    )  # fmt: skip
    return DomainObservation(state="running", defined=config, live=config)


def test_a_running_nic_shows_its_host_device_and_leases_after_the_ipam_address() -> None:
    [nic] = nic_status_observed(
        [NIC], running("vnet7"), {MAC: ("10.77.0.10", "10.77.0.99"), "52:54:00:00:00:09": ("1.2.3.4",)}
    )
    assert nic.host_device == "vnet7"
    assert nic.ip_addresses == ["10.77.0.10", "10.77.0.99"]  # the IPAM's once, then the guest's other lease


def test_a_stopped_vm_has_only_the_ipam_address_and_no_device() -> None:
    [nic] = nic_status_observed([NIC], None, {})
    assert nic.host_device is None and nic.ip_addresses == ["10.77.0.10"]

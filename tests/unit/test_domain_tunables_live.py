"""QoS set on a running domain of libvirt's test driver, read back as status shows it, and reset to the
host's defaults without leaving a difference behind. (CPU shares and quotas need the QEMU driver's
cgroups: tests/e2e/test_qos.py.)"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator

import pytest

from vdc.api.common import Bandwidth, BandwidthLimit, IoBurst, IoTune
from vdc.api.virtualmachine import DiskStatus, InterfaceStatus, QosStatus
from vdc.controllers.vm_plan import differing_fields
from vdc.controllers.vm_qos import disks_in_force, interfaces_in_force, qos_in_force
from vdc.libvirt import domains
from vdc.libvirt.domain_xml import (
    BandwidthConfig,
    BandwidthLimitConfig,
    DiskConfig,
    DomainConfig,
    InterfaceConfig,
    IoTuneConfig,
    MemTuneConfig,
    OwnerMetadata,
)

UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a42"
NIC = InterfaceConfig(network="default", mac="52:54:00:aa:bb:42")
DISK = DiskConfig(target_dev="vda", source_file="/var/lib/vdc/probe.img", driver_type="raw")
PLAIN = DomainConfig(
    name="team-a_tunables",
    uuid=UID,
    owner=OwnerMetadata(namespace="team-a", name="tunables", uid=UID),
    memory_kib=1024 * 1024,
    current_memory_kib=1024 * 1024,
    domain_type="test",
    disks=(DISK,),
    interfaces=(NIC,),
)
# The test driver takes no limit above its burst (QEMU does: a burst of 0 is none), so both have one.
BURSTY = IoTuneConfig(
    total_iops_sec=50,
    total_iops_sec_max=200,
    total_iops_sec_max_length=4,
    read_bytes_sec=10**6,
    read_bytes_sec_max=10**6,
)
SHAPED = BandwidthConfig(inbound=BandwidthLimitConfig(1000, 2000, 64), outbound=BandwidthLimitConfig(500))


@pytest.fixture
def running() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    domains.define(conn, PLAIN)
    domains.start(conn, UID)
    try:
        yield conn
    finally:
        domains.remove(conn, UID)
        conn.close()


def live(conn: typing.Any) -> DomainConfig:
    observed = domains.observe_domain(conn, UID)
    assert observed is not None and observed.live is not None
    return observed.live


def test_memory_limits_io_limits_and_bandwidth_are_set_live_and_read_back(running: typing.Any) -> None:
    domains.set_memory_tune(running, UID, MemTuneConfig(hard_limit=2 * 1024**2, soft_limit=512 * 1024))
    domains.set_io_tune(running, UID, (dataclasses.replace(DISK, iotune=BURSTY),), PLAIN.disks)
    domains.set_bandwidth(running, UID, (dataclasses.replace(NIC, bandwidth=SHAPED),))

    now = live(running)
    assert qos_in_force(now) == QosStatus(memory_reservation="524288Ki", memory_limit="2097152Ki")
    [disk] = disks_in_force([DiskStatus(name="root")], now, {"root": "vda"})
    assert disk.iotune == IoTune(
        total_iops_sec=50, read_bytes_sec=10**6, burst=IoBurst(total_iops_sec=200, read_bytes_sec=10**6, seconds=4)
    )
    [nic] = interfaces_in_force([InterfaceStatus(name="eth0", mac_address=NIC.mac)], now)
    assert nic.bandwidth == Bandwidth(
        inbound=BandwidthLimit(average=1000, peak=2000, burst=64), outbound=BandwidthLimit(average=500)
    )
    wanted = dataclasses.replace(
        PLAIN,
        memtune=MemTuneConfig(hard_limit=2 * 1024**2, soft_limit=512 * 1024),
        disks=(dataclasses.replace(DISK, iotune=BURSTY),),
        interfaces=(dataclasses.replace(NIC, bandwidth=SHAPED),),
    )
    assert "memtune" not in differing_fields(now, wanted)
    assert "disks" not in differing_fields(now, wanted)
    assert "interfaces" not in differing_fields(now, wanted)


def test_limits_removed_live_leave_nothing_to_set_again(running: typing.Any) -> None:
    domains.set_memory_tune(running, UID, MemTuneConfig(hard_limit=2 * 1024**2))
    domains.set_io_tune(running, UID, (dataclasses.replace(DISK, iotune=BURSTY),), PLAIN.disks)
    domains.set_bandwidth(running, UID, (dataclasses.replace(NIC, bandwidth=SHAPED),))
    before = live(running)

    domains.set_memory_tune(running, UID, None)
    domains.set_io_tune(running, UID, PLAIN.disks, before.disks)
    domains.set_bandwidth(running, UID, PLAIN.interfaces)

    now = live(running)
    assert qos_in_force(now) is None
    assert [d.iotune for d in disks_in_force([DiskStatus(name="root")], now, {"root": "vda"})] == [None]
    assert [n.bandwidth for n in interfaces_in_force([InterfaceStatus(name="e", mac_address=NIC.mac)], now)] == [None]
    left = differing_fields(now, PLAIN)
    assert not {"memtune", "disks", "interfaces"} & set(left), left

"""libvirt domain XML: golden files, libvirt's RNG schema, libvirt's test driver, and round trips.

The golden configs are the fixtures of every check here: each is rendered and compared with its file
under ``golden/domain/`` (``VDC_UPDATE_GOLDEN=1`` rewrites them), validated with ``virt-xml-validate``,
defined in libvirt's test driver and read back. A coverage test (virt-manager's idea) fails when some
dataclass field is never given a non-default value by any golden config, so a new field cannot be
added without showing that libvirt accepts it and gives it back.

The test driver (``test:///default``) accepts ``type='qemu'`` and ``type='kvm'`` domains as they are
(it checks neither the emulator nor the machine), so the goldens use the real domain types; there is
no ``test`` domain type in the dataclasses.
"""

from __future__ import annotations

import dataclasses
import typing
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc.libvirt.domain_xml import (
    OWNER_NS,
    BandwidthConfig,
    BandwidthLimitConfig,
    BootDevice,
    CpuConfig,
    CpuTuneConfig,
    DiskConfig,
    DomainConfig,
    DomainXmlError,
    GraphicsConfig,
    InterfaceConfig,
    IoTuneConfig,
    MemTuneConfig,
    OsConfig,
    OwnerMetadata,
    SerialConsoleConfig,
    WatchdogConfig,
    owner_from_domain_xml,
)
from xmlconfigs import check_golden, config_classes, stale_golden_files, unexercised_fields, virt_xml_validate

GOLDEN_DIR = Path(__file__).parent / "golden" / "domain"

GOLDEN: dict[str, DomainConfig] = {
    # Direct kernel boot, no disks: the smallest VM the e2e tests boot under TCG.
    "minimal-kernel-boot": DomainConfig(
        name="vdc-default-tiny",
        uuid="0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11",
        owner=OwnerMetadata(
            namespace="default",
            name="tiny",
            uid="0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11",
            host_file_dirs=("/var/lib/vdc/boot", "/srv/kernels"),
        ),
        memory_kib=131072,
        current_memory_kib=131072,
        domain_type="qemu",
        os=OsConfig(
            kernel="/var/lib/vdc/boot/vmlinuz",
            initrd="/var/lib/vdc/boot/initrd.img",
            cmdline="console=ttyS0 panic=-1 quiet",
        ),
        interfaces=(InterfaceConfig(network="vdc-lan", mac="52:54:00:0b:5c:2f"),),
        serial=SerialConsoleConfig(log_file="/var/log/libvirt/qemu/vdc-default-tiny-console.log"),
    ),
    # Everything a production VM uses: UEFI, topology with hot-pluggable vCPUs, balloon headroom,
    # throttled disks on two buses, shaped NICs, VNC, CPU QoS.
    "uefi-full": DomainConfig(
        name="vdc-team-a-db-0",
        uuid="5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e2",
        owner=OwnerMetadata(namespace="team-a", name="db-0", uid="5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e2", generation=7),
        memory_kib=4 * 1024 * 1024,
        current_memory_kib=2 * 1024 * 1024,
        vcpus=4,
        max_vcpus=8,
        domain_type="kvm",
        cpu=CpuConfig(mode="host-passthrough", sockets=2, cores=2, threads=2),
        os=OsConfig(firmware="efi"),
        disks=(
            DiskConfig(
                target_dev="vda",
                bus="virtio",
                source_file="/var/lib/vdc/pools/fast/db-0-root.qcow2",
                driver_type="qcow2",
                boot_order=1,
                cache="none",
                io="native",
                iotune=IoTuneConfig(
                    total_bytes_sec=104857600,
                    total_iops_sec=2000,
                    total_bytes_sec_max=209715200,
                    total_iops_sec_max=4000,
                    total_bytes_sec_max_length=10,
                    total_iops_sec_max_length=5,
                ),
            ),
            DiskConfig(
                target_dev="sda",
                bus="scsi",
                source_file="/var/lib/vdc/pools/fast/db-0-data.img",
                driver_type="raw",
                serial="db-0-data",
                cache="writeback",
                io="threads",
                iotune=IoTuneConfig(
                    read_bytes_sec=52428800,
                    write_bytes_sec=26214400,
                    read_iops_sec=1000,
                    write_iops_sec=500,
                    read_bytes_sec_max=104857600,
                    write_bytes_sec_max=52428800,
                    read_iops_sec_max=2000,
                    write_iops_sec_max=1000,
                    read_bytes_sec_max_length=3,
                    write_bytes_sec_max_length=4,
                    read_iops_sec_max_length=6,
                    write_iops_sec_max_length=7,
                ),
            ),
        ),
        interfaces=(
            InterfaceConfig(
                network="vdc-backend",
                mac="52:54:00:5d:1e:9a",
                model="e1000e",
                bandwidth=BandwidthConfig(
                    inbound=BandwidthLimitConfig(average=12500, peak=25000, burst=1024),
                    outbound=BandwidthLimitConfig(average=6250),
                ),
                link_state="down",
                target_dev="vdc5d1e9a3c0",
            ),
            InterfaceConfig(network="vdc-lan", mac="52:54:00:5d:1e:9b"),
        ),
        serial=SerialConsoleConfig(),
        graphics=GraphicsConfig(type="vnc", listen="0.0.0.0"),
        cputune=CpuTuneConfig(shares=2048, period=100000, quota=400000, global_period=100000, global_quota=250000),
        memtune=MemTuneConfig(hard_limit=5242880, soft_limit=2097152),
        emulator="/usr/bin/qemu-system-x86_64",
        watchdog=WatchdogConfig(),
    ),
    # A cloud image with its cloud-init NoCloud seed on a read-only SATA CD-ROM; run strategy Once.
    "cdrom-seed": DomainConfig(
        name="vdc-web-frontend",
        uuid="c3a7e0d4-1f2b-4e5a-b6c7-d8e9f0a1b2c3",
        owner=OwnerMetadata(namespace="web", name="frontend", uid="c3a7e0d4-1f2b-4e5a-b6c7-d8e9f0a1b2c3"),
        memory_kib=1048576,
        current_memory_kib=1048576,
        vcpus=2,
        domain_type="kvm",
        cpu=CpuConfig(mode="custom", model="Haswell-noTSX"),
        disks=(
            DiskConfig(
                target_dev="vda",
                source_file="/var/lib/vdc/pools/default/frontend-root.qcow2",
                driver_type="qcow2",
                boot_order=1,
                cache="writethrough",
                io="io_uring",
            ),
            DiskConfig(
                target_dev="sda",
                bus="sata",
                source_file="/var/lib/vdc/pools/default/frontend-cidata.iso",
                device="cdrom",
                readonly=True,
            ),
        ),
        interfaces=(InterfaceConfig(network="vdc-lan", mac="52:54:00:c3:a7:e0"),),
        serial=SerialConsoleConfig(log_file="/var/log/libvirt/qemu/vdc-web-frontend-console.log"),
        on_reboot="destroy",
        memballoon=False,
        rng=False,
    ),
    # An old 32-bit appliance: i440fx, legacy <boot dev> order, IDE, an empty CD-ROM drive, rtl8139.
    "legacy-bios": DomainConfig(
        name="vdc-lab-old-appliance",
        uuid="7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b",
        owner=OwnerMetadata(namespace="lab", name="old-appliance", uid="7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b"),
        memory_kib=524288,
        current_memory_kib=524288,
        domain_type="qemu",
        cpu=CpuConfig(mode="host-model"),
        os=OsConfig(arch="i686", machine="pc", boot_devices=("cdrom", "hd", "network")),
        disks=(
            DiskConfig(
                target_dev="hda",
                bus="ide",
                source_file="/var/lib/vdc/pools/default/old-appliance-disk1.qcow2",
                driver_type="qcow2",
                cache="directsync",
            ),
            DiskConfig(target_dev="hdc", bus="ide", device="cdrom", readonly=True, cache="unsafe"),
        ),
        interfaces=(InterfaceConfig(network="vdc-lab", mac="52:54:00:7e:8f:9a", model="rtl8139"),),
        graphics=GraphicsConfig(type="vnc"),
        on_poweroff="preserve",
        on_crash="coredump-restart",
        watchdog=WatchdogConfig(model="ib700", action="reset"),
    ),
}


def render(config: DomainConfig) -> str:
    return config.to_string() + "\n"


# --- 1. golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_matches_golden_file(name: str) -> None:
    check_golden(GOLDEN_DIR, name, render(GOLDEN[name]))


def test_every_golden_file_has_a_config() -> None:
    stale = stale_golden_files(GOLDEN_DIR, GOLDEN)
    assert not stale, f"golden files without a config in GOLDEN: {stale}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_parses_back_to_its_config(name: str) -> None:
    assert DomainConfig.from_string((GOLDEN_DIR / f"{name}.xml").read_text()) == GOLDEN[name]


# --- 2. libvirt's RNG schema ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_validates_against_libvirt_schema(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(render(GOLDEN[name]))
    virt_xml_validate(path, "domain")


# --- 3. libvirt's test driver ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_driver() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


def as_libvirt_returns_it(config: DomainConfig, defined: DomainConfig) -> DomainConfig:
    """``config`` with the values libvirt fills in on define (documented in the module docstring)."""
    os_config = config.os
    if not os_config.boot_devices and all(d.boot_order is None for d in config.disks):
        os_config = dataclasses.replace(os_config, boot_devices=("hd",))
    interfaces = []
    for want, got in zip(config.interfaces, defined.interfaces, strict=False):
        if want.target_dev is None and got.target_dev is not None and got.target_dev.startswith("testnet"):
            want = dataclasses.replace(want, target_dev=got.target_dev)
        interfaces.append(want)
    return dataclasses.replace(config, os=os_config, interfaces=tuple(interfaces))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_libvirt_test_driver_accepts_and_returns_the_config(name: str, test_driver: typing.Any) -> None:
    config = GOLDEN[name]
    domain = test_driver.defineXML(config.to_string())
    try:
        returned = domain.XMLDesc(0)
        defined = DomainConfig.from_string(returned)
        assert defined == as_libvirt_returns_it(config, defined)
        # libvirt added things we do not model (clock, video, controllers, addresses); still ours:
        assert owner_from_domain_xml(returned) == config.owner
        inactive = DomainConfig.from_string(domain.XMLDesc(2))  # VIR_DOMAIN_XML_INACTIVE
        assert inactive == defined
    finally:
        domain.undefine()


def test_libvirt_test_driver_running_domain_still_parses(test_driver: typing.Any) -> None:
    config = dataclasses.replace(
        GOLDEN["uefi-full"], name="vdc-running-probe", uuid="5d1e9a3c-7b2f-4c11-8e0a-000000000001"
    )
    domain = test_driver.defineXML(config.to_string())
    try:
        domain.create()
        defined = DomainConfig.from_string(domain.XMLDesc(0))
        assert defined == as_libvirt_returns_it(config, defined)
        domain.destroy()
    finally:
        domain.undefine()


# --- 4. property: any valid config round-trips ----------------------------------------------------

xml_text = st.text(alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs")), max_size=20)
names = xml_text.filter(lambda s: s != "" and "/" not in s)
optional_text = st.none() | xml_text
positive = st.integers(min_value=1, max_value=2**40)
optional_positive = st.none() | positive
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def literal_values(cls: type, field: str) -> st.SearchStrategy[typing.Any]:
    hint = typing.get_type_hints(cls)[field]
    return st.sampled_from(typing.get_args(hint))


@st.composite
def iotunes(draw: st.DrawFn) -> IoTuneConfig:
    total_bytes, total_iops = draw(st.booleans()), draw(st.booleans())
    values = {
        "total_bytes_sec": draw(optional_positive) if total_bytes else None,
        "read_bytes_sec": None if total_bytes else draw(optional_positive),
        "write_bytes_sec": None if total_bytes else draw(optional_positive),
        "total_iops_sec": draw(optional_positive) if total_iops else None,
        "read_iops_sec": None if total_iops else draw(optional_positive),
        "write_iops_sec": None if total_iops else draw(optional_positive),
    }
    if all(v is None for v in values.values()):
        values["total_bytes_sec"], values["read_bytes_sec"], values["write_bytes_sec"] = draw(positive), None, None
    for name in list(values):
        limit = values[name]
        if limit is not None and draw(st.booleans()):
            values[f"{name}_max"] = limit + draw(st.integers(min_value=0, max_value=2**30))
            values[f"{name}_max_length"] = draw(optional_positive)
    return IoTuneConfig(**values)


@st.composite
def mem_tunes(draw: st.DrawFn) -> MemTuneConfig:
    hard, soft = draw(optional_positive), draw(optional_positive)
    return MemTuneConfig(hard_limit=hard, soft_limit=soft if soft is not None or hard is not None else draw(positive))


bandwidth_values = st.integers(min_value=1, max_value=2**32 - 1)  # libvirt's unsigned 32-bit
limits = st.builds(
    BandwidthLimitConfig,
    average=bandwidth_values,
    peak=st.none() | bandwidth_values,
    burst=st.none() | bandwidth_values,
)
bandwidths = st.one_of(
    st.builds(BandwidthConfig, inbound=limits, outbound=st.none() | limits),
    st.builds(BandwidthConfig, inbound=st.none(), outbound=limits),
)
interfaces = st.builds(
    InterfaceConfig,
    network=xml_text,
    mac=macs,
    model=literal_values(InterfaceConfig, "model"),
    bandwidth=st.none() | bandwidths,
    link_state=literal_values(InterfaceConfig, "link_state"),
    target_dev=optional_text,
)


@st.composite
def disks(draw: st.DrawFn, boot_order: bool) -> DiskConfig:
    return DiskConfig(
        target_dev=draw(xml_text),
        bus=draw(literal_values(DiskConfig, "bus")),
        source_file=draw(optional_text),
        driver_type=draw(literal_values(DiskConfig, "driver_type")),
        device=draw(literal_values(DiskConfig, "device")),
        readonly=draw(st.booleans()),
        serial=draw(optional_text),
        boot_order=draw(optional_positive) if boot_order else None,
        cache=draw(literal_values(DiskConfig, "cache")),
        io=draw(literal_values(DiskConfig, "io")),
        iotune=draw(st.none() | iotunes()),
    )


@st.composite
def cpu_tunes(draw: st.DrawFn) -> CpuTuneConfig:
    values = {
        "shares": draw(optional_positive),
        "period": draw(optional_positive),
        "quota": draw(st.none() | st.just(-1) | positive),
        "global_period": draw(optional_positive),
        "global_quota": draw(st.none() | st.just(-1) | positive),
    }
    if all(v is None for v in values.values()):
        values["shares"] = draw(positive)
    return CpuTuneConfig(**values)


@st.composite
def domains(draw: st.DrawFn) -> DomainConfig:
    vcpus = draw(st.integers(1, 64))
    max_vcpus = draw(st.none() | st.integers(vcpus + 1, 256))
    mode = draw(literal_values(CpuConfig, "mode"))
    model = draw(names) if mode == "custom" else None
    topology: tuple[int | None, int | None, int | None] = (None, None, None)
    if draw(st.booleans()):
        topology = (max_vcpus or vcpus, 1, 1)
    kernel = draw(optional_text)
    legacy_boot = draw(st.booleans())
    memory = draw(positive)
    return DomainConfig(
        name=draw(names),
        uuid=str(draw(st.uuids())),
        owner=draw(
            st.builds(
                OwnerMetadata,
                namespace=xml_text,
                name=xml_text,
                uid=xml_text,
                generation=st.none() | positive,
                host_file_dirs=st.lists(xml_text, max_size=3).map(tuple),
            )
        ),
        memory_kib=memory,
        current_memory_kib=draw(st.integers(1, memory)),
        vcpus=vcpus,
        max_vcpus=max_vcpus,
        domain_type=draw(literal_values(DomainConfig, "domain_type")),
        cpu=CpuConfig(mode=mode, model=model, sockets=topology[0], cores=topology[1], threads=topology[2]),
        os=OsConfig(
            arch=draw(xml_text),
            machine=draw(optional_text),
            firmware=draw(literal_values(OsConfig, "firmware")),
            kernel=kernel,
            initrd=draw(optional_text) if kernel is not None else None,
            cmdline=draw(optional_text) if kernel is not None else None,
            boot_devices=tuple(draw(st.lists(st.sampled_from(typing.get_args(BootDevice)), max_size=4)))
            if legacy_boot
            else (),
        ),
        disks=tuple(draw(st.lists(disks(boot_order=not legacy_boot), max_size=4))),
        interfaces=tuple(draw(st.lists(interfaces, max_size=4))),
        serial=draw(st.none() | st.builds(SerialConsoleConfig, log_file=optional_text)),
        graphics=draw(st.none() | st.builds(GraphicsConfig, type=st.just("vnc"), listen=xml_text)),
        cputune=draw(st.none() | cpu_tunes()),
        memtune=draw(st.none() | mem_tunes()),
        emulator=draw(optional_text),
        on_poweroff=draw(literal_values(DomainConfig, "on_poweroff")),
        on_reboot=draw(literal_values(DomainConfig, "on_reboot")),
        on_crash=draw(literal_values(DomainConfig, "on_crash")),
        memballoon=draw(st.booleans()),
        rng=draw(st.booleans()),
        watchdog=draw(
            st.none()
            | st.builds(
                WatchdogConfig,
                model=literal_values(WatchdogConfig, "model"),
                action=literal_values(WatchdogConfig, "action"),
            )
        ),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(domains())
def test_any_valid_config_round_trips_through_xml(config: DomainConfig) -> None:
    assert DomainConfig.from_string(config.to_string()) == config
    assert owner_from_domain_xml(config.to_string()) == config.owner


# --- 5. every field is exercised by the golden configs --------------------------------------------


def test_every_field_has_a_non_default_value_in_some_golden_config() -> None:
    missing = unexercised_fields((DomainConfig,), GOLDEN.values())
    assert not missing, f"fields no golden config sets to a non-default value: {missing}"


def test_coverage_walk_reaches_every_config_class() -> None:
    assert config_classes(DomainConfig) == {
        BandwidthConfig,
        BandwidthLimitConfig,
        CpuConfig,
        CpuTuneConfig,
        DiskConfig,
        DomainConfig,
        GraphicsConfig,
        InterfaceConfig,
        IoTuneConfig,
        MemTuneConfig,
        OsConfig,
        OwnerMetadata,
        SerialConsoleConfig,
        WatchdogConfig,
    }


# --- parsing what libvirt returns, ownership, refusals --------------------------------------------

# What the QEMU driver returns for a running domain (libvirt 9): aliases, addresses, PCI controllers,
# default input/video devices, seclabels, <resource>, expanded machine type, firmware loader/nvram.
QEMU_LIVE_XML = f"""<domain type='kvm' id='3'>
  <name>vdc-team-a-db-1</name>
  <uuid>5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3</uuid>
  <metadata>
    <vdc:owner xmlns:vdc="{OWNER_NS}" namespace="team-a" name="db-1" uid="5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3"
      generation="2"/>
    <other:thing xmlns:other="https://example.com/other"/>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <cputune>
    <shares>1024</shares>
    <vcpupin vcpu='0' cpuset='1'/>
  </cputune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <firmware>
      <feature enabled='no' name='enrolled-keys'/>
      <feature enabled='no' name='secure-boot'/>
    </firmware>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vdc_VARS.fd</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'>
    <topology sockets='1' dies='1' cores='2' threads='2'/>
  </cpu>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='/var/lib/vdc/pools/fast/db-1-root.qcow2' index='2'/>
      <backingStore type='file' index='3'>
        <format type='qcow2'/>
        <source file='/var/lib/vdc/pools/fast/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <iotune>
        <total_bytes_sec>1048576</total_bytes_sec>
        <group_name>drive-virtio-disk0</group_name>
      </iotune>
      <boot order='1'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/foreign'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'>
      <alias name='usb'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'>
      <alias name='pcie.0'/>
    </controller>
    <interface type='network'>
      <mac address='52:54:00:5d:1e:9c'/>
      <source network='vdc-lan' portid='0f4a1c54-7c66-4d6f-9b7a-1b2c3d4e5f60' bridge='virbr1'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <link state='up'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/4'/>
      <log file='/var/log/vdc/db-1.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/4'>
      <source path='/dev/pts/4'/>
      <log file='/var/log/vdc/db-1.log' append='on'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <input type='mouse' bus='ps2'>
      <alias name='input0'/>
    </input>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video>
      <model type='vga' vram='16384' heads='1' primary='yes'/>
      <alias name='video0'/>
    </video>
    <watchdog model='i6300esb' action='pause'>
      <alias name='watchdog0'/>
      <address type='pci' domain='0x0000' bus='0x10' slot='0x01' function='0x0'/>
    </watchdog>
    <memballoon model='virtio'>
      <stats period='5'/>
      <alias name='balloon0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <alias name='rng0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3</label>
    <imagelabel>libvirt-5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
  </seclabel>
</domain>
"""


def test_parses_what_the_qemu_driver_returns_for_a_running_domain() -> None:
    assert DomainConfig.from_string(QEMU_LIVE_XML) == DomainConfig(
        name="vdc-team-a-db-1",
        uuid="5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3",
        owner=OwnerMetadata("team-a", "db-1", "5d1e9a3c-7b2f-4c11-8e0a-93b4c2d1f0e3", generation=2),
        memory_kib=2097152,
        current_memory_kib=1048576,
        vcpus=2,
        max_vcpus=4,
        domain_type="kvm",
        cpu=CpuConfig(mode="host-passthrough", sockets=1, cores=2, threads=2),
        os=OsConfig(machine="pc-q35-7.2", firmware="efi"),
        disks=(
            DiskConfig(
                target_dev="vda",
                source_file="/var/lib/vdc/pools/fast/db-1-root.qcow2",
                driver_type="qcow2",
                boot_order=1,
                cache="none",
                io="native",
                iotune=IoTuneConfig(total_bytes_sec=1048576),
            ),
        ),
        interfaces=(InterfaceConfig(network="vdc-lan", mac="52:54:00:5d:1e:9c", target_dev="vnet3"),),
        serial=SerialConsoleConfig(log_file="/var/log/vdc/db-1.log"),
        graphics=GraphicsConfig(type="vnc"),
        cputune=CpuTuneConfig(shares=1024),
        emulator="/usr/bin/qemu-system-x86_64",
        watchdog=WatchdogConfig(),
    )


def test_a_watchdog_without_an_action_is_libvirts_default_reset() -> None:
    text = render(GOLDEN["uefi-full"]).replace(
        '<watchdog model="i6300esb" action="pause" />', "<watchdog model='i6300esb'/>"
    )
    assert DomainConfig.from_string(text).watchdog == WatchdogConfig(action="reset")


def test_memory_in_other_units_is_converted_to_kib() -> None:
    text = render(GOLDEN["minimal-kernel-boot"]).replace(
        '<memory unit="KiB">131072</memory>', "<memory unit='MiB'>256</memory>"
    )
    assert DomainConfig.from_string(text).memory_kib == 262144


def test_owner_of_a_foreign_domain_is_none() -> None:
    foreign = "<domain type='kvm'><name>someone-elses</name><metadata><x:y xmlns:x='urn:x'/></metadata></domain>"
    assert owner_from_domain_xml(foreign) is None
    assert owner_from_domain_xml(f"<domain><name>{OWNER_NS}</name></domain>") is None
    with pytest.raises(DomainXmlError, match="not one of ours"):
        DomainConfig.from_string(foreign)


def test_owner_is_written_with_the_vdc_prefix_and_read_back() -> None:
    text = render(GOLDEN["uefi-full"])
    # ElementTree declares the namespace on the root; libvirt moves it onto <vdc:owner> when it stores it.
    assert f'xmlns:vdc="{OWNER_NS}"' in text
    assert "<vdc:owner " in text
    assert owner_from_domain_xml(text) == GOLDEN["uefi-full"].owner


def test_malformed_owner_is_an_error_not_a_foreign_domain() -> None:
    text = f"<domain><metadata><vdc:owner xmlns:vdc='{OWNER_NS}' name='n'/></metadata></domain>"
    with pytest.raises(DomainXmlError, match="namespace"):
        owner_from_domain_xml(text)


def test_user_input_cannot_inject_xml() -> None:
    evil = "x</cmdline><devices><hostdev/></devices><cmdline>"
    config = dataclasses.replace(
        GOLDEN["minimal-kernel-boot"],
        name="a'b\"c<d>&e",
        os=dataclasses.replace(GOLDEN["minimal-kernel-boot"].os, cmdline=evil),
    )
    text = config.to_string()
    assert ET.fromstring(text).find(".//hostdev") is None
    assert DomainConfig.from_string(text) == config


@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\r", "\ufffe"])
def test_characters_xml_cannot_carry_are_refused(bad: str) -> None:
    config = dataclasses.replace(GOLDEN["minimal-kernel-boot"], name=f"vm{bad}")
    with pytest.raises(DomainXmlError, match="cannot be represented in XML"):
        config.to_string()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CpuConfig(mode="custom"), "model is required"),
        (lambda: CpuConfig(mode="host-model", model="Haswell"), "model is required"),
        (lambda: CpuConfig(sockets=1), "all of sockets"),
        (lambda: IoTuneConfig(), "at least one limit"),
        (lambda: IoTuneConfig(total_bytes_sec=0), "at least 1"),
        (lambda: IoTuneConfig(total_bytes_sec=1, read_bytes_sec=1), "cannot be combined"),
        (lambda: IoTuneConfig(total_iops_sec=1, write_iops_sec=1), "cannot be combined"),
        (lambda: CpuTuneConfig(), "at least one"),
        (lambda: CpuTuneConfig(quota=0), "quota"),
        (lambda: OsConfig(cmdline="quiet"), "need a kernel"),
        (lambda: InterfaceConfig(network="n", mac="52:54:00:AA:BB:CC"), "lowercase"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], uuid="5D1E9A3C-7B2F-4C11-8E0A-93B4C2D1F0E2"), "canonical"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], uuid="not-a-uuid"), "not a UUID"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], name="a/b"), "no '/'"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], max_vcpus=4), "max_vcpus must exceed"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], max_vcpus=None), "topology 2x2x2"),
        (lambda: dataclasses.replace(GOLDEN["uefi-full"], current_memory_kib=2**40), "cannot exceed"),
        (
            lambda: dataclasses.replace(GOLDEN["uefi-full"], os=OsConfig(boot_devices=("hd",))),
            "cannot be used together",
        ),
    ],
)
def test_configs_libvirt_would_refuse_or_silently_change_are_refused(
    build: typing.Callable[[], object], message: str
) -> None:
    with pytest.raises(DomainXmlError, match=message):
        build()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('<target dev="vda" bus="virtio" />', "<target dev='vda' bus='usb'/>", "disk target bus"),
        ('<model type="e1000e" />', "<model type='ne2k_pci'/>", "interface model"),
        ('<vcpu current="4">8</vcpu>', "<vcpu>many</vcpu>", "vcpu"),
        (' type="kvm">', " type='xen'>", "domain type"),
    ],
)
def test_values_we_do_not_model_are_reported_with_the_element(old: str, new: str, message: str) -> None:
    text = render(GOLDEN["uefi-full"])
    assert old in text
    with pytest.raises(DomainXmlError, match=message):
        DomainConfig.from_string(text.replace(old, new))


def test_not_xml_is_a_domain_xml_error() -> None:
    with pytest.raises(DomainXmlError, match="well-formed"):
        DomainConfig.from_string("<domain>")
    with pytest.raises(DomainXmlError, match="well-formed"):
        owner_from_domain_xml(f"<domain>{OWNER_NS}")


def test_to_string_renders_once_per_config_and_anew_for_a_changed_copy() -> None:
    config = GOLDEN[sorted(GOLDEN)[0]]
    text = config.to_string()
    assert config.to_string() is text  # rendered once: a reconcile checks it, then defines it
    renamed = dataclasses.replace(config, name="other")
    assert "<name>other</name>" in renamed.to_string() and "<name>other</name>" not in text
    assert renamed != config and config == dataclasses.replace(config)  # the rendering is not a field

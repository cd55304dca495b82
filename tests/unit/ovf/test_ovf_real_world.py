"""What real exporters write that a strict first reading of DSP0243 refused: deployment options
sharing InstanceIDs, vApps named after a member, lists of adapter types, oVirt/RHV and virt-v2v
descriptors, per-option property defaults, and VMware's OVF 0.9 (refused, saying how to convert)."""

from __future__ import annotations

import re

import pytest

from vdc.ovf.envelope import DiskFormat, parse_envelope
from vdc.ovf.errors import InvalidDescriptor, UnsupportedFeature
from vdc.ovf.hardware import summarize

GiB = 1 << 30
MiB = 1 << 20

HEAD = (
    '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
    'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)
STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
OPTIONS = (
    "<DeploymentOptionSection><Info>sizes</Info>"
    '<Configuration ovf:id="tiny"><Label>Tiny</Label><Description>2 vCPUs, 12 GiB</Description></Configuration>'
    '<Configuration ovf:id="small" ovf:default="true"><Label>Small</Label><Description>4 vCPUs</Description>'
    "</Configuration>"
    '<Configuration ovf:id="large"><Label>Large</Label><Description>16 vCPUs, a data disk</Description>'
    "</Configuration></DeploymentOptionSection>"
)


def item(instance: str, kind: int, body: str = "", configuration: str | None = None) -> str:
    attr = f' ovf:configuration="{configuration}"' if configuration is not None else ""
    return (
        f"<Item{attr}><rasd:InstanceID>{instance}</rasd:InstanceID>"
        f"<rasd:ResourceType>{kind}</rasd:ResourceType>{body}</Item>"
    )


def cpus(n: int) -> str:
    return f"<rasd:VirtualQuantity>{n}</rasd:VirtualQuantity>"


def mem(mib: int) -> str:
    return f"<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:VirtualQuantity>{mib}</rasd:VirtualQuantity>"


def disk(ref: str, parent: str = "3") -> str:
    return f"<rasd:HostResource>ovf:/disk/{ref}</rasd:HostResource><rasd:Parent>{parent}</rasd:Parent>"


def vcsa_like(items: str, properties: str = "") -> str:
    """Like the vCenter Server Appliance: options tiny/small/large; the CPU and memory items share
    InstanceIDs across options, and a data disk exists only in ``large``."""
    return (
        f"{HEAD}<References>"
        '<File ovf:id="f1" ovf:href="system.vmdk"/><File ovf:id="f2" ovf:href="data.vmdk"/></References>'
        "<DiskSection><Info>d</Info>"
        f'<Disk ovf:diskId="system" ovf:fileRef="f1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30" '
        f'ovf:format="{STREAM}"/>'
        f'<Disk ovf:diskId="data" ovf:fileRef="f2" ovf:capacity="100" ovf:capacityAllocationUnits="byte * 2^30" '
        f'ovf:format="{STREAM}"/></DiskSection>'
        f"{OPTIONS}"
        "<VirtualSystem ovf:id='vcsa'><Info>x</Info>"
        f"<ProductSection><Info>p</Info>{properties}</ProductSection>"
        f"<VirtualHardwareSection><Info>h</Info>{items}</VirtualHardwareSection></VirtualSystem></Envelope>"
    )


VCSA_ITEMS = (
    item("1", 3, cpus(2), "tiny")
    + item("1", 3, cpus(4), "small")
    + item("1", 3, cpus(16), "large")
    + item("2", 4, mem(12288))  # every option, unless one says otherwise
    + item("2", 4, mem(65536), "large")
    + item("3", 6, "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>")
    + item("4", 17, disk("system"))
    + item("5", 17, disk("data"), "large")
    + item("6", 17, disk("data"), "large")  # the same disk again in the same option: one disk
)


def shape(text: str, option: str | None = None) -> tuple[int | None, int | None, list[str | None]]:
    envelope = parse_envelope(text)
    hw = summarize(envelope, envelope.virtual_systems()[0], configuration=option)
    return hw.cpus, hw.memory_bytes, [d.disk_id for d in hw.disks]


def test_items_that_share_an_instance_id_across_deployment_options_are_chosen_per_option() -> None:
    text = vcsa_like(VCSA_ITEMS)
    assert shape(text) == (4, 12288 * MiB, ["system"])  # the default option is small
    assert shape(text, "tiny") == (2, 12288 * MiB, ["system"])
    assert shape(text, "large") == (16, 65536 * MiB, ["system", "data"])


def test_the_default_option_is_the_first_when_none_is_marked() -> None:
    assert shape(vcsa_like(VCSA_ITEMS).replace(' ovf:default="true"', "")) == (2, 12288 * MiB, ["system"])


def test_an_unknown_option_names_the_choices() -> None:
    with pytest.raises(
        InvalidDescriptor, match=re.escape("'huge' is not in the descriptor (it has: tiny, small, large)")
    ):
        shape(vcsa_like(VCSA_ITEMS), "huge")


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            item("1", 3, cpus(2), "tiny") + item("1", 3, cpus(4), "tiny small"),
            "InstanceID '1' in deployment option 'tiny'",
        ),
        (item("1", 3, cpus(2)) + item("1", 3, cpus(4)), "two items have InstanceID '1'"),
        (item("1", 3, cpus(2), "medium"), "ovf:configuration names 'medium', not an option"),
    ],
)
def test_items_sharing_an_instance_id_within_one_option_are_refused(items: str, message: str) -> None:
    with pytest.raises(InvalidDescriptor, match=re.escape(message)):
        parse_envelope(vcsa_like(items))


def test_property_defaults_per_deployment_option() -> None:
    properties = (
        '<Property ovf:key="heap" ovf:type="uint32" ovf:value="2048" ovf:userConfigurable="true">'
        '<Value ovf:value="512" ovf:configuration="tiny"/><Value ovf:value="8192" ovf:configuration="large"/>'
        "</Property>"
    )
    (heap,) = parse_envelope(vcsa_like(VCSA_ITEMS, properties)).properties()
    assert [heap.default_for(o) for o in ("tiny", "small", "large", None)] == ["512", "2048", "8192", "2048"]


def test_a_collection_may_share_its_id_with_a_member_but_siblings_may_not() -> None:
    system = (
        "<VirtualSystem ovf:id='{id}'><Info>x</Info><VirtualHardwareSection><Info>h</Info>"
        f"{item('1', 3, cpus(1))}</VirtualHardwareSection></VirtualSystem>"
    )
    vapp = (
        f"{HEAD}<VirtualSystemCollection ovf:id='web01'><Info>vCloud vApp named after its first VM</Info>"
        + system.format(id="web01")
        + system.format(id="db01")
        + "</VirtualSystemCollection></Envelope>"
    )
    assert [s.id for s in parse_envelope(vapp).virtual_systems()] == ["web01", "db01"]
    with pytest.raises(InvalidDescriptor, match="id 'web01' appears twice"):
        parse_envelope(vapp.replace("'db01'", "'web01'"))


@pytest.mark.parametrize(
    ("subtype", "model", "preferred"),
    [
        ("VMXNET3 virtio", "vmxnet3", "virtio"),
        ("PCNet32", "pcnet", "pcnet"),
        ("E1000e", "e1000e", "e1000e"),
        ("vmxnet3", "vmxnet3", "vmxnet3"),  # none supported: the first choice, for the VM to map
    ],
)
def test_adapter_type_lists_pick_the_first_supported_model(subtype: str, model: str, preferred: str) -> None:
    nic = item("7", 10, f"<rasd:ResourceSubType>{subtype}</rasd:ResourceSubType><rasd:Connection>lan</rasd:Connection>")
    envelope = parse_envelope(vcsa_like(item("1", 3, cpus(1)) + nic))
    (adapter,) = summarize(envelope, envelope.virtual_systems()[0]).nics
    assert adapter.model == model
    assert adapter.preferred_model(("virtio", "e1000", "e1000e", "pcnet")) == preferred


OVIRT_HEAD = (
    '<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1/" '
    'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" '
    'xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="4.4.0.0">'
)
IMAGE, VOLUME = "3b5c2e1a-6f1d-4a7e-9d0c-2a1b3c4d5e6f", "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d"


def ovirt_export(disk_attrs: str, host_resource: str, file_id: str = VOLUME) -> str:
    """What oVirt's export domain and virt-v2v ``-o rhv``/``-o vdsm`` write (names and values made up)."""
    return (
        f"{OVIRT_HEAD}<References>"
        f'<File ovf:href="{IMAGE}/{VOLUME}" ovf:id="{file_id}" ovf:size="1073741824" ovf:description="x"/>'
        "</References>"
        '<Section xsi:type="ovf:NetworkSection_Type"><Info>List of networks</Info>'
        '<Network ovf:name="ovirtmgmt"/></Section>'
        '<Section xsi:type="ovf:DiskSection_Type"><Info>List of Virtual Disks</Info>'
        f'<Disk ovf:diskId="{VOLUME}" {disk_attrs} ovf:parentRef="" '
        'ovf:vm_snapshot_id="00000000-0000-0000-0000-000000000000" '
        'ovf:disk-interface="VirtIO_SCSI" ovf:boot="true"/></Section>'
        '<Content ovf:id="out" xsi:type="ovf:VirtualSystem_Type"><Name>rhel9</Name>'
        '<Section ovf:id="4f5a8a3c-5f5e-4b1a-9c61-4dcd0e6b5a11" ovf:required="false" '
        'xsi:type="ovf:OperatingSystemSection_Type"><Info>Guest Operating System</Info>'
        "<Description>rhel_9x64</Description></Section>"
        '<Section xsi:type="ovf:VirtualHardwareSection_Type"><Info>2 CPU, 4096 Memory</Info>'
        "<System><vssd:VirtualSystemType>ENGINE 4.4.0.0</vssd:VirtualSystemType></System>"
        "<Item><rasd:Caption>2 virtual cpu</rasd:Caption><rasd:InstanceId>1</rasd:InstanceId>"
        "<rasd:ResourceType>3</rasd:ResourceType><rasd:num_of_sockets>2</rasd:num_of_sockets>"
        "<rasd:cpu_per_socket>1</rasd:cpu_per_socket><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>"
        "<Item><rasd:Caption>4096 MB of memory</rasd:Caption><rasd:InstanceId>2</rasd:InstanceId>"
        "<rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>"
        "<rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>"
        f"<Item><rasd:Caption>Drive 1</rasd:Caption><rasd:InstanceId>{VOLUME}</rasd:InstanceId>"
        f"<rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>{host_resource}</rasd:HostResource>"
        "<rasd:Parent>00000000-0000-0000-0000-000000000000</rasd:Parent></Item>"
        "<Item><rasd:Caption>Ethernet adapter on ovirtmgmt</rasd:Caption>"
        "<rasd:InstanceId>6a1e4c2b-9f8e-4d7c-8b6a-5f4e3d2c1b0a</rasd:InstanceId>"
        "<rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>3</rasd:ResourceSubType>"
        "<rasd:Connection>ovirtmgmt</rasd:Connection><rasd:Name>nic1</rasd:Name>"
        "<rasd:MACAddress>56:6f:1a:2b:00:01</rasd:MACAddress></Item>"
        "</Section></Content></ovf:Envelope>"
    )


@pytest.mark.parametrize(
    ("flavour", "text", "expected_format"),
    [
        (
            "virt-v2v -o rhv (raw)",
            ovirt_export(
                f'ovf:size="20" ovf:actual_size="2" ovf:fileRef="{IMAGE}/{VOLUME}" '
                'ovf:format="http://en.wikipedia.org/wiki/Byte" ovf:volume-format="RAW" ovf:volume-type="Sparse"',
                f"{IMAGE}/{VOLUME}",
            ),
            DiskFormat("raw"),
        ),
        (
            "old RHEV export domain (qcow2 that names the vmdk spec)",
            ovirt_export(
                f'ovf:size="20" ovf:actual_size="2" ovf:fileRef="{IMAGE}/{VOLUME}" '
                'ovf:format="http://www.vmware.com/specifications/vmdk.html#sparse" ovf:volume-format="COW"',
                f"{IMAGE}/{VOLUME}",
            ),
            DiskFormat("qcow2"),
        ),
        (
            "an OVA whose files are named by volume, its items by image/volume",
            ovirt_export(f'ovf:size="20" ovf:fileRef="{VOLUME}" ovf:volume-format="COW"', f"{IMAGE}/{VOLUME}").replace(
                f'ovf:href="{IMAGE}/{VOLUME}"', f'ovf:href="{VOLUME}"'
            ),
            DiskFormat("qcow2"),
        ),
        (
            "oVirt 4.4 OVA export",
            ovirt_export(
                f'ovf:capacity="20" ovf:capacityAllocationUnits="byte * 2^30" ovf:populatedSize="1073741824" '
                f'ovf:fileRef="{VOLUME}" ovf:format="http://www.gnome.org/~markmc/qcow-image-format.html" '
                'ovf:volume-format="COW"',
                f"ovf:/disk/{VOLUME}",
            ),
            DiskFormat("qcow2"),
        ),
    ],
)
def test_ovirt_and_virt_v2v_exports_import(flavour: str, text: str, expected_format: DiskFormat) -> None:
    envelope = parse_envelope(text)
    assert envelope.version == "1.x", flavour
    (system,) = envelope.virtual_systems()
    assert system.id == "out" and system.name == "rhel9"
    assert system.operating_system is not None
    assert (system.operating_system.id, system.operating_system.description) == (None, "rhel_9x64")
    hw = summarize(envelope, system)
    assert (hw.cpus, hw.memory_bytes) == (2, 4096 * MiB)
    (drive,) = hw.disks
    assert (drive.disk_id, drive.capacity_bytes) == (VOLUME, 20 * GiB)
    assert drive.file == envelope.references[0].href
    assert (drive.format, drive.bus) == (expected_format, "scsi")
    (nic,) = hw.nics
    assert (nic.network, nic.model) == ("ovirtmgmt", "virtio")


def test_an_ovirt_disk_without_any_size_is_refused_naming_it() -> None:
    text = ovirt_export(f'ovf:fileRef="{IMAGE}/{VOLUME}" ovf:volume-format="RAW"', f"{IMAGE}/{VOLUME}")
    with pytest.raises(InvalidDescriptor, match=re.escape(f"<Disk diskId='{VOLUME}'> has no ovf:capacity")):
        parse_envelope(text)


def test_vmware_ovf_0_9_is_refused_saying_how_to_convert() -> None:
    text = (
        '<Envelope xmlns="http://www.vmware.com/schema/ovf/1/envelope" '
        'xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope" ovf:version="0.9"><References/></Envelope>'
    )
    with pytest.raises(UnsupportedFeature, match=r"OVF 0\.9 .*ovftool"):
        parse_envelope(text)

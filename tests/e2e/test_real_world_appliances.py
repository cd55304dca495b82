"""Appliances shaped like what other tools export, on real hosts: a descriptor with deployment options
(items sharing InstanceIDs, a disk and property defaults per option, as VMware's appliances have), and
an oVirt/RHV OVA export (trailing-slash namespace, ``rasd:InstanceId``, a GUID-named qcow2 disk sized
in GiB, oVirt's NIC type numbers). The descriptors are written here; the disks boot the tiny guest."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from test_appliances import (
    SWITCH,
    _appliance,
    _marker,
    _publish,
    _ready,
    _vm,
    site,  # noqa: F401  (its fixture: a pool, a switch, an HTTP server)
)

from appliances import build_boot_disk
from conftest import Datacenter, wait_until
from httpserve import FileServer
from vdc.ovf.convert import image_info, to_qcow2, to_stream_optimized_vmdk
from vdc.ovf.environment import read_environment, read_environment_iso
from vdc.ovf.writer import write_ova

MARKER = "vdc-options"

OPTIONS_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="system" ovf:href="system.vmdk" ovf:size="{size}"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="system" ovf:fileRef="system" ovf:capacity="{capacity}"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:diskId="data" ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20"/>
  </DiskSection>
  <NetworkSection><Info>networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <DeploymentOptionSection><Info>sizes</Info>
    <Configuration ovf:id="small" ovf:default="true"><Label>Small</Label><Description>1 vCPU</Description>
    </Configuration>
    <Configuration ovf:id="large"><Label>Large</Label><Description>2 vCPUs and a data disk</Description>
    </Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="manager"><Info>manager</Info>
    <ProductSection><Info>settings</Info>
      <Property ovf:key="heap" ovf:type="uint32" ovf:value="64" ovf:userConfigurable="true">
        <Value ovf:value="128" ovf:configuration="large"/>
      </Property>
    </ProductSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item ovf:configuration="small"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>128</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>192</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/system</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item ovf:configuration="large"><rasd:HostResource>ovf:/disk/data</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>VMXNET3 e1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


@pytest.fixture(scope="module")
def options_ova(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("options")
    disk = work / "system.vmdk"
    to_stream_optimized_vmdk(build_boot_disk(None, MARKER), "raw", disk)
    descriptor = OPTIONS_OVF.format(size=disk.stat().st_size, capacity=image_info(disk, "vmdk").virtual_size)
    out = work / "options.ova"
    write_ova(out, "options.ovf", descriptor.encode(), {"system.vmdk": disk})
    return out


def _wait_appliance(dc: Datacenter, name: str) -> dict:
    try:
        return wait_until(f"appliance {name} Ready", lambda: _ready(dc, "appliance", name, dc.namespace), timeout=240)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nstatus: {(dc.get('appliance', name, dc.namespace) or {}).get('status')}"
        ) from None


def test_a_vm_gets_the_hardware_disks_and_property_defaults_of_its_deployment_option(
    datacenter: Datacenter,
    site: FileServer,  # noqa: F811
    options_ova: Path,
) -> None:
    dc = datacenter
    _appliance(dc, "options", _publish(site, options_ova, "options.ova"))
    appliance = _wait_appliance(dc, "options")
    options = {o["id"]: o for o in appliance["status"]["deploymentOptions"]}
    assert [(o["id"], o.get("default", False), o["label"]) for o in options.values()] == [
        ("small", True, "Small"),
        ("large", False, "Large"),
    ]
    assert [d["id"] for d in options["large"]["virtualSystems"][0]["disks"]] == ["system", "data"]

    _vm(dc, "opt-small", "options")
    _vm(dc, "opt-large", "options", deploymentOption="large")
    _vm(dc, "opt-huge", "options", deploymentOption="huge")
    huge = dc.wait_vm("opt-huge", lambda b: (dc.condition(b, "Stalled") or {}).get("status") == "True", "Stalled")
    assert (
        "'huge' is not in the appliance (it has: small (Small), large (Large))"
        in dc.condition(huge, "Stalled")["message"]
    )
    small = dc.wait_ready("opt-small", timeout=240)
    large = dc.wait_ready("opt-large", timeout=240)
    assert (small["spec"]["cpu"]["count"], small["spec"]["memory"]["size"]) == (1, "128Mi")
    assert (large["spec"]["cpu"]["count"], large["spec"]["memory"]["size"]) == (2, "192Mi")
    assert [d["name"] for d in small["spec"]["disks"]] == ["disk-system", "ovf-env"]
    assert [d["name"] for d in large["spec"]["disks"]] == ["disk-system", "disk-data", "ovf-env"]
    assert large["spec"]["interfaces"][0]["model"] == "e1000"  # "VMXNET3 e1000": the first a VM here has

    # What libvirt runs, and what the guest is told.
    host, domain = large["status"]["host"], large["status"]["domainName"]
    xml = dc.virsh(host, "dumpxml", domain)
    assert "<vcpu placement='static'>2</vcpu>" in xml and xml.count("<disk type=") == 3
    env_disk = next(d for d in large["status"]["disks"] if d["name"] == "ovf-env")
    local = Path(dc.hosts.state) / "hosts" / host / "lib" / Path(env_disk["path"]).relative_to("/var/lib/libvirt")
    assert read_environment(read_environment_iso(local.read_bytes()))["heap"] == "128"
    assert wait_until("the guest's marker", lambda: _marker(dc, dc.vm("opt-large") or large), timeout=180) == MARKER

    for name in ("opt-small", "opt-large", "opt-huge"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=90s")
    dc.cp.kubectl("delete", "appliance", "options", "-n", dc.namespace, "--timeout=60s")


IMAGE, VOLUME = "0f6b3e2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b", "7c8d9e0f-1a2b-4c3d-9e4f-5a6b7c8d9e0f"
OVIRT_MARKER = "vdc-ovirt"
OVIRT_OVF = """<?xml version='1.0' encoding='UTF-8'?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1/"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="4.4.0.0">
  <References><File ovf:href="{volume}" ovf:id="{volume}" ovf:size="{size}" ovf:description="exported"/></References>
  <Section xsi:type="ovf:NetworkSection_Type"><Info>List of networks</Info>
    <Network ovf:name="ovirtmgmt"/></Section>
  <Section xsi:type="ovf:DiskSection_Type"><Info>List of Virtual Disks</Info>
    <Disk ovf:diskId="{image}" ovf:size="1" ovf:actual_size="1" ovf:vm_snapshot_id="{image}" ovf:parentRef=""
        ovf:fileRef="{volume}" ovf:format="http://www.gnome.org/~markmc/qcow-image-format.html"
        ovf:volume-format="COW" ovf:volume-type="Sparse" ovf:disk-interface="VirtIO" ovf:boot="true"
        ovf:disk-alias="tiny_Disk1" ovf:wipe-after-delete="false"/></Section>
  <Content ovf:id="out" xsi:type="ovf:VirtualSystem_Type">
    <Name>tiny</Name><Description>exported from oVirt</Description>
    <Section ovf:id="4a7b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d" ovf:required="false"
        xsi:type="ovf:OperatingSystemSection_Type"><Info>Guest Operating System</Info>
      <Description>other_linux</Description></Section>
    <Section xsi:type="ovf:VirtualHardwareSection_Type"><Info>1 CPU, 160 Memory</Info>
      <System><vssd:VirtualSystemType>ENGINE 4.4.0.0</vssd:VirtualSystemType></System>
      <Item><rasd:Caption>1 virtual cpu</rasd:Caption><rasd:InstanceId>1</rasd:InstanceId>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:num_of_sockets>1</rasd:num_of_sockets>
        <rasd:cpu_per_socket>1</rasd:cpu_per_socket><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:Caption>160 MB of memory</rasd:Caption><rasd:InstanceId>2</rasd:InstanceId>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:VirtualQuantity>160</rasd:VirtualQuantity></Item>
      <Item><rasd:Caption>tiny_Disk1</rasd:Caption><rasd:InstanceId>{volume}</rasd:InstanceId>
        <rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>{image}/{volume}</rasd:HostResource>
        <rasd:Parent>00000000-0000-0000-0000-000000000000</rasd:Parent></Item>
      <Item><rasd:Caption>Ethernet adapter on ovirtmgmt</rasd:Caption>
        <rasd:InstanceId>9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a</rasd:InstanceId>
        <rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>3</rasd:ResourceSubType>
        <rasd:Connection>ovirtmgmt</rasd:Connection><rasd:Name>nic1</rasd:Name></Item>
    </Section>
  </Content>
</ovf:Envelope>
"""


@pytest.fixture(scope="module")
def ovirt_ova(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Laid out as oVirt's OVA export: the descriptor, then the disk named by its volume GUID; no manifest."""
    work = tmp_path_factory.mktemp("ovirt")
    disk = work / VOLUME
    to_qcow2(build_boot_disk(None, OVIRT_MARKER), "raw", disk)
    descriptor = work / "vm.ovf"
    descriptor.write_text(OVIRT_OVF.format(image=IMAGE, volume=VOLUME, size=disk.stat().st_size))
    out = work / "ovirt.ova"
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(descriptor, arcname="vm.ovf")
        tar.add(disk, arcname=VOLUME)
    return out


def test_an_ovirt_ova_export_imports_and_boots(
    datacenter: Datacenter,
    site: FileServer,  # noqa: F811
    ovirt_ova: Path,
) -> None:
    dc = datacenter
    _appliance(dc, "ovirt", _publish(site, ovirt_ova, "ovirt.ova"))
    appliance = _wait_appliance(dc, "ovirt")
    [system] = appliance["status"]["virtualSystems"]
    assert (system["id"], system["os"], system["cpus"], system["memory"]) == ("out", "other_linux", 1, "160Mi")
    [disk] = system["disks"]
    assert (disk["id"], disk["capacity"], disk["format"], disk["bus"]) == (IMAGE, "1024Mi", "qcow2", "virtio")
    assert system["nics"] == [{"network": "ovirtmgmt", "model": "virtio"}]

    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "from-ovirt", "namespace": dc.namespace},
        "spec": {"fromAppliance": {"name": "ovirt", "networkMapping": {"ovirtmgmt": SWITCH}},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}, "terminationGracePeriodSeconds": 3},
    })  # fmt: skip
    body = dc.wait_ready("from-ovirt", timeout=240)
    assert body["spec"]["disks"][0]["bus"] == "virtio" and body["spec"]["interfaces"][0]["model"] == "virtio"
    assert wait_until("the guest's marker", lambda: _marker(dc, dc.vm("from-ovirt") or body), timeout=180) == (
        OVIRT_MARKER
    )
    dc.cp.kubectl("delete", "vm", "from-ovirt", "-n", dc.namespace, "--timeout=90s")
    dc.cp.kubectl("delete", "appliance", "ovirt", "-n", dc.namespace, "--timeout=60s")

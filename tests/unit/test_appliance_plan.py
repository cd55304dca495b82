"""What an Appliance's status says about a parsed package (``vdc.controllers.appliance_plan``, pure)."""

from __future__ import annotations

from pathlib import Path

from vdc.controllers.appliance_plan import base_volume_name, describe
from vdc.ovf.envelope import parse_envelope

SAMPLES = Path(__file__).parent / "ovf" / "samples"


def test_a_vapp_becomes_systems_properties_networks_and_start_order() -> None:
    envelope = parse_envelope((SAMPLES / "vapp-collection.ovf").read_bytes())
    volumes = {d.disk_id: base_volume_name("shop", "vapp", "0b5c2f1e-4a86", d.disk_id) for d in envelope.disks}
    d = describe(envelope, volumes)
    assert [s.id for s in d.virtual_systems] == ["lb", "app", "db"]
    assert {n.name for n in d.networks} == {"public", "internal"}
    # Full keys (class.key.instance), as the OVF environment names them.
    props = {p.key: p for p in d.properties}
    assert list(props) == ["com.example.shop.domain", "com.example.shop.admin_password", "com.example.shop.build",
                           "com.example.lb.ip.1"]  # fmt: skip
    assert props["com.example.shop.domain"].default == "shop.example.com"
    assert props["com.example.shop.domain"].user_configurable and not props["com.example.shop.build"].user_configurable
    # The StartupSections of the collection and of its nested one, in document order.
    assert [(s.id, s.order, s.start_delay) for s in d.startup] == [
        ("backend", 1, 30), ("lb", 2, 0), ("db", 1, 10), ("app", 2, 0)
    ]  # fmt: skip
    for system in d.virtual_systems:
        assert system.cpus and system.memory
        for disk in system.disks:
            if disk.volume:
                assert disk.volume == volumes[disk.id] and disk.volume.startswith("appliance_shop_vapp_0b5c2f1e_")
    assert {i.disk_id for i in d.images} <= set(volumes)


def test_vendor_descriptors_describe_their_hardware() -> None:
    for sample in ("vmware-esxi.ovf", "virtualbox.ovf", "ovf2.ovf"):
        envelope = parse_envelope((SAMPLES / sample).read_bytes())
        d = describe(envelope, {})
        assert d.virtual_systems, sample
        system = d.virtual_systems[0]
        assert system.cpus and system.memory and system.disks and system.nics, (sample, system)
        assert d.ovf_version


def test_base_volume_names_are_safe_file_names() -> None:
    assert (
        base_volume_name("ns", "app", "0123456789abcdef", "disk/../x y")
        == "appliance_ns_app_01234567_disk-..-x-y.qcow2"
    )

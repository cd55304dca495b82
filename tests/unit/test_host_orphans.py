"""Orphans (``controllers.orphans``): what a host holds and the live VMs in, orphan domains and volumes out;
their place in Host status, Events, the metric, and the `vdc gc` views. Pure: no libvirt, no API server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import libvirt
import pytest

from vdc.api.host import (
    ORPHANS_LISTED,
    REMOVE_ORPHANS_ANNOTATION,
    HostOrphans,
    HostSpec,
    HostStatus,
    OrphanRemoval,
)
from vdc.api.virtualmachine import VirtualMachine
from vdc.cli.gc import format_orphans, format_removal, removal_outcome
from vdc.controllers import storagepool
from vdc.controllers.host import HostObservation, host_status
from vdc.controllers.orphans import (
    POOL_PREFIX,
    LiveVms,
    Orphans,
    Removal,
    describe,
    find_orphans,
    is_orphan_domain,
    orphans_event,
    orphans_status,
    volume_candidates,
    volume_owner,
)
from vdc.controllers.vm_disks import plan_volumes
from vdc.libvirt import inventory
from vdc.libvirt.domain_xml import OwnerMetadata
from vdc.libvirt.host_facts import HostFacts
from vdc.libvirt.inventory import DomainSeen, VolumeSeen, disk_references, volume_reference
from vdc.metrics.collectors import families

UID_WEB = "11111111-0000-0000-0000-000000000001"
UID_OLD = "22222222-0000-0000-0000-000000000002"
POOL = "vdc-fast"
DIR = "/var/lib/libvirt/vdc-pools/fast"


def vm_body(namespace: str, name: str, uid: str, disks: list[dict[str, Any]] | None = None, **meta: Any) -> dict:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": uid, **meta},
        "spec": {"memory": {"size": "64Mi"}, "disks": disks or []},
    }


def domain(name: str, uuid: str, owner: tuple[str, str, str] | None, *disks: str, active: bool = False) -> DomainSeen:
    meta = OwnerMetadata(namespace=owner[0], name=owner[1], uid=owner[2]) if owner else None
    return DomainSeen(uuid=uuid, name=name, active=active, owner=meta, disks=frozenset(disks))


def volume(name: str, pool: str = POOL, backing: str | None = None) -> VolumeSeen:
    return VolumeSeen(pool=pool, name=name, path=f"/pools/{pool}/{name}", backing=backing)


LIVE = LiveVms.of([vm_body("shop", "web", UID_WEB)])


# --- names -----------------------------------------------------------------------------------------


def test_the_pool_prefix_is_the_storage_pool_controllers() -> None:
    assert POOL_PREFIX == storagepool.POOL_PREFIX
    assert storagepool.libvirt_pool_name("fast") == POOL


def test_every_volume_name_a_vm_gets_parses_as_that_vms() -> None:
    vm = VirtualMachine.model_validate(
        {
            "metadata": {"name": "web.v2", "namespace": "shop-1", "uid": UID_WEB},
            "spec": {
                "memory": {"size": "64Mi"},
                "cloudInit": {"userData": "#cloud-config"},
                "disks": [
                    {"name": "root", "source": {"clone": {"pool": "p", "baseVolume": "base.qcow2"}}},
                    {"name": "data-1", "source": {"blank": {"pool": "p", "size": "1Gi"}}},
                    {"name": "seed", "source": {"cloudInit": {"pool": "p"}}},
                    {"name": "env", "source": {"ovfEnv": {"pool": "p"}}},
                ],
            },
        }
    )
    plans = [p for p in plan_volumes(vm) if p.kind != "volume"]
    assert len(plans) == 4
    for plan in plans:
        owner = volume_owner(plan.volume)
        assert owner is not None, plan.volume
        assert (owner.namespace, owner.vm, owner.disk) == ("shop-1", "web.v2", plan.disk)


@pytest.mark.parametrize(
    "name",
    [
        "appliance_shop_tiny_1a2b3c4d_disk1.qcow2",  # an appliance's base image
        "appliance_shop_tiny_1a2b3c4d_vmdisk1.qcow2",
        "shop_tiny_upload.ova",  # `vdc import-ova` upload
        "golden.qcow2",
        "shop_web.qcow2",
        "shop_web_root_extra.qcow2",
        "Shop_web_root.qcow2",
        "shop_web_root.img",
        "shop_web_root.qcow2.bak",
    ],
)
def test_names_we_do_not_give_vm_volumes_are_never_a_vms(name: str) -> None:
    assert volume_owner(name) is None


# --- domains ---------------------------------------------------------------------------------------


def test_a_domain_of_a_live_vm_is_not_an_orphan() -> None:
    assert not is_orphan_domain(domain("shop_web", UID_WEB, ("shop", "web", UID_WEB)), LIVE)
    # the owner is not read for domains whose UUID is a live VM's
    assert not is_orphan_domain(domain("shop_web", UID_WEB, None), LIVE)


def test_a_domain_without_our_metadata_is_never_ours() -> None:
    assert not is_orphan_domain(domain("someones", UID_OLD, None), LIVE)


def test_a_domain_whose_vm_is_gone_is_an_orphan() -> None:
    assert is_orphan_domain(domain("shop_db", UID_OLD, ("shop", "db", UID_OLD)), LIVE)


def test_a_domain_of_a_vm_since_recreated_under_the_same_name_is_an_orphan() -> None:
    assert is_orphan_domain(domain("shop_web", UID_OLD, ("shop", "web", UID_OLD)), LIVE)


def test_a_vm_being_deleted_is_live() -> None:
    live = LiveVms.of([vm_body("shop", "db", UID_OLD, deletionTimestamp="2024-01-01T00:00:00Z")])
    assert not is_orphan_domain(domain("shop_db", UID_OLD, ("shop", "db", UID_OLD)), live)
    assert not volume_candidates([volume("shop_db_root.qcow2")], live)


def test_namespaces_the_operator_does_not_watch_are_left_alone() -> None:
    live = LiveVms.of([], namespaces=["shop"])
    assert not is_orphan_domain(domain("other_db", UID_OLD, ("other", "db", UID_OLD)), live)
    assert is_orphan_domain(domain("shop_db", UID_OLD, ("shop", "db", UID_OLD)), live)
    assert [v.name for v in volume_candidates([volume("other_db_d.qcow2"), volume("shop_db_d.qcow2")], live)] == [
        "shop_db_d.qcow2"
    ]


# --- volumes ---------------------------------------------------------------------------------------


def test_volumes_of_live_vms_are_kept_and_of_gone_ones_are_orphans() -> None:
    found = find_orphans([], [volume("shop_web_root.qcow2"), volume("shop_db_root.qcow2"), volume("x.qcow2")], LIVE)
    assert [v.name for v in found.volumes] == ["shop_db_root.qcow2"]


def test_only_volumes_in_our_pools_count() -> None:
    assert not find_orphans([], [volume("shop_db_root.qcow2", pool="default")], LIVE).volumes


def test_volumes_live_vms_name_or_pools_publish_are_kept() -> None:
    disks = [
        {"name": "a", "source": {"volume": {"pool": "fast", "name": "old_vm_data.qcow2"}}},
        {"name": "b", "source": {"clone": {"pool": "fast", "baseVolume": "old_vm_root.qcow2"}}},
    ]
    status_disks = [{"name": "c", "pool": "fast", "volume": "old_vm_seed.iso"}]
    vm = {**vm_body("shop", "web", UID_WEB, disks), "status": {"disks": status_disks}}
    pool = {"metadata": {"name": "fast"}, "spec": {"publishedVolumes": [{"name": "old_vm_golden.qcow2"}]}}
    live = LiveVms.of([vm], [pool])
    names = ["old_vm_data.qcow2", "old_vm_root.qcow2", "old_vm_seed.iso", "old_vm_golden.qcow2", "old_vm_x.qcow2"]
    assert [v.name for v in find_orphans([], [volume(n) for n in names], live).volumes] == ["old_vm_x.qcow2"]


def test_a_volume_a_domain_uses_is_kept_unless_that_domain_is_an_orphan_too() -> None:
    a, b = volume("old_a_root.qcow2"), volume("old_b_root.qcow2")
    foreign = domain("handmade", "33333333-0000-0000-0000-000000000003", None, str(a.path))
    orphan = domain("old_b", UID_OLD, ("old", "b", UID_OLD), str(b.path), active=True)
    found = find_orphans([foreign, orphan], [a, b], LIVE)
    assert [d.name for d in found.domains] == ["old_b"]
    assert [v.name for v in found.volumes] == ["old_b_root.qcow2"]


def test_a_pool_volume_reference_keeps_a_volume_too() -> None:
    vol = volume("old_a_root.qcow2")
    user = domain("handmade", "33333333-0000-0000-0000-000000000003", None, volume_reference(POOL, vol.name))
    assert not find_orphans([user], [vol], LIVE).volumes


def test_what_other_hosts_use_keeps_a_volume() -> None:
    vol = volume("old_a_root.qcow2")
    assert not find_orphans([], [vol], LIVE, in_use=frozenset({str(vol.path)})).volumes


def test_a_base_under_a_kept_overlay_is_kept_down_the_chain() -> None:
    base = volume("old_a_base.qcow2")
    mid = volume("old_a_mid.qcow2", backing=base.path)
    top = volume("team_live_root.qcow2", backing=mid.path)  # not ours to judge: kept, and so its chain
    assert not find_orphans([], [base, mid, top], LiveVms.of([vm_body("team", "live", UID_WEB)])).volumes
    # with the overlay an orphan too, the whole chain goes
    found = find_orphans([], [base, mid, top], LiveVms())
    assert [v.name for v in found.volumes] == ["old_a_base.qcow2", "old_a_mid.qcow2", "team_live_root.qcow2"]


def test_disk_references_read_files_devices_pool_volumes_and_backing_chains() -> None:
    xml = """<domain type='qemu'><name>x</name><devices>
      <disk type='file' device='disk'><source file='/p/a.qcow2'/>
        <backingStore type='file'><source file='/p/base.qcow2'/></backingStore></disk>
      <disk type='block' device='disk'><source dev='/dev/sdb'/></disk>
      <disk type='volume' device='disk'><source pool='vdc-fast' volume='v.qcow2'/></disk>
      <disk type='file' device='cdrom'/>
      <interface type='network'><source network='default'/></interface>
    </devices></domain>"""
    assert disk_references(xml) == {"/p/a.qcow2", "/p/base.qcow2", "/dev/sdb", volume_reference("vdc-fast", "v.qcow2")}
    assert disk_references("not xml") == frozenset()


class FakeDomain:
    def __init__(self, metadata: str | None) -> None:
        self._metadata = metadata

    def metadata(self, kind: int, uri: str, flags: int) -> str:
        assert (kind, uri) == (libvirt.VIR_DOMAIN_METADATA_ELEMENT, "https://vdc.dev/xmlns/owner/v1")
        if self._metadata is None:
            err = libvirt.libvirtError("metadata not found")
            err.err = (libvirt.VIR_ERR_NO_DOMAIN_METADATA, 0, "metadata not found", 0, "", None, None, 0, 0)
            raise err
        return self._metadata


def test_the_owner_is_read_from_the_element_libvirt_hands_back_without_its_namespace() -> None:
    files = '<hostFiles><allowed path="/k"/></hostFiles>'
    text = f'<owner namespace="shop" name="db" uid="{UID_OLD}" generation="3">{files}</owner>'
    owner = inventory._owner(FakeDomain(text))  # type: ignore[arg-type]
    assert owner == OwnerMetadata(namespace="shop", name="db", uid=UID_OLD, generation=3, host_file_dirs=("/k",))
    assert inventory._owner(FakeDomain(None)) is None  # type: ignore[arg-type]
    assert inventory._owner(FakeDomain("<other/>")) is None  # type: ignore[arg-type]
    assert inventory._owner(FakeDomain('<owner name="x"/>')) is None  # type: ignore[arg-type]  # malformed: not ours


# --- status, events, metric ------------------------------------------------------------------------


def many() -> Orphans:
    domains = [domain(f"old_d{i:02d}", f"uuid-{i:02d}", ("old", f"d{i:02d}", f"uid-{i:02d}")) for i in range(25)]
    return find_orphans(domains, [volume(f"old_v{i:02d}_root.qcow2") for i in range(30)], LIVE)


def test_status_counts_all_and_names_the_first_ones_with_what_they_claim() -> None:
    status = orphans_status(many())
    assert (status.domain_count, status.volume_count) == (25, 30)
    assert len(status.domains) == len(status.volumes) == ORPHANS_LISTED
    assert status.domains[0].name == "old_d00"
    assert status.domains[0].owner.model_dump() == {"namespace": "old", "name": "d00", "uid": "uid-00"}
    assert status.volumes[0].pool == "fast"  # the StoragePool, not the libvirt pool
    assert status.volumes[0].owner.model_dump() == {"namespace": "old", "name": "v00", "uid": None}
    wire = HostStatus(orphans=status).to_wire()["orphans"]
    assert wire["domainCount"] == 25 and wire["domains"][0]["owner"]["uid"] == "uid-00"


FACTS = HostFacts("n1", "u", 4, 2**32, "9.0.0", "QEMU", "7.2.0", frozenset({"qemu"}))


def test_host_status_reports_orphans_when_connected_and_keeps_them_when_not() -> None:
    spec = HostSpec(uri="test+unix:///default?socket=/s")
    orphans = orphans_status(many())
    status = host_status(spec, 1, HostObservation(connected=True, facts=FACTS, orphans=orphans), None)
    assert status.orphans == orphans
    away = host_status(spec, 1, HostObservation(connected=False, error="gone"), status)
    assert away.orphans == orphans
    none_looked = host_status(spec, 1, HostObservation(connected=True, facts=FACTS), status)
    assert none_looked.orphans == orphans


def test_an_event_only_when_the_counts_change() -> None:
    some = orphans_status(many())
    assert orphans_event(some, some, "h1") is None
    assert orphans_event(None, HostOrphans(), "h1") is None
    reason, message, warning = orphans_event(None, some, "h1") or ("", "", False)
    assert (reason, warning) == ("OrphansFound", True)
    assert "25 orphan domain(s): old_d00 (claims VM old/d00 uid uid-00)" in message
    assert "30 orphan volume(s): fast/old_v00_root.qcow2" in message
    assert "vdc gc --host h1" in message and REMOVE_ORPHANS_ANNOTATION in message
    fewer = some.model_copy(update={"volume_count": 29})
    assert (orphans_event(some, fewer, "h1") or ("",))[0] == "OrphansFound"
    assert (orphans_event(some, HostOrphans(), "h1") or ("",))[0] == "OrphansGone"


def test_describe_says_when_nothing_is_there() -> None:
    assert describe(HostOrphans()) == "no orphans"


def test_removal_message_and_status() -> None:
    removal = Removal(
        domains=("old_b (uuid-b)",),
        volumes=tuple(f"fast/old_v{i:02d}_root.qcow2" for i in range(25)),
        kept=("fast/old_a_root.qcow2",),
        failed=("old_c (uuid-c): busy",),
    )
    message = removal.message()
    assert message.startswith("removed 1 orphan domain(s): old_b (uuid-b); 25 orphan volume(s): fast/old_v00")
    assert "(20 more)" in message
    assert "left alone (no longer orphans): fast/old_a_root.qcow2" in message
    assert "failed: old_c (uuid-c): busy" in message
    status = removal.status("tok", "2024-01-02T03:04:05Z")
    assert len(status.volumes) == ORPHANS_LISTED and status.failed == ["old_c (uuid-c): busy"]
    assert Removal().message() == "removed 0 orphan domain(s); 0 orphan volume(s)"


def test_the_metric_counts_orphans_per_host_and_kind() -> None:
    hosts = [
        {"metadata": {"name": "h1"}, "status": {"orphans": {"domainCount": 2, "volumeCount": 3}}},
        {"metadata": {"name": "h2"}, "status": {"orphans": {}}},
        {"metadata": {"name": "h3"}, "status": {}},  # not looked at yet: no series
    ]
    [family] = [f for f in families(hosts, [], [], [], []) if f.name == "vdc_host_orphans"]
    got = {(s.labels["host"], s.labels["kind"]): s.value for s in family.samples}
    assert got == {("h1", "domain"): 2, ("h1", "volume"): 3, ("h2", "domain"): 0, ("h2", "volume"): 0}


# --- vdc gc ----------------------------------------------------------------------------------------


def host_body(orphans: HostOrphans | None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    status = HostStatus(orphans=orphans).to_wire()
    return {"metadata": {"name": "h1", "annotations": annotations or {}}, "status": status}


def test_gc_lists_the_orphans_from_status() -> None:
    text = format_orphans(host_body(orphans_status(many())))
    assert text.startswith("host h1: 25 orphan domain(s), 30 orphan volume(s)\n")
    assert "old_d00" in text and "old/d00 (uid uid-00)" in text and "fast" in text
    assert "… and 5 more domain(s)" in text and "… and 10 more volume(s)" in text
    assert "no orphan report" in format_orphans(host_body(None))


def test_gc_waits_for_the_operators_report_of_its_own_request() -> None:
    now = datetime(2024, 1, 2, tzinfo=UTC).isoformat()
    asked = host_body(HostOrphans(), {REMOVE_ORPHANS_ANNOTATION: "t1"})
    assert removal_outcome(asked, "t1") is None
    done = HostOrphans(last_removal=OrphanRemoval(token="t1", time=now, domains=["d (u)"], message="removed 1"))
    report = removal_outcome(host_body(done), "t1")
    assert isinstance(report, dict) and report["domains"] == ["d (u)"]
    assert format_removal(report) == "removed 1\nremoved domain d (u)\n"
    # ours done, and another asked since: ours is reported
    assert removal_outcome(host_body(done, {REMOVE_ORPHANS_ANNOTATION: "t2"}), "t1") == report
    # ours overwritten by another request before the operator got to it
    assert "another removal" in str(removal_outcome(host_body(done, {REMOVE_ORPHANS_ANNOTATION: "t2"}), "t0"))
    assert "not by the operator" in str(removal_outcome(host_body(HostOrphans()), "t1"))

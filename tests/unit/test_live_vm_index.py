"""The live VMs orphans are judged against, kept incrementally (``controllers.orphans.LiveVmIndex``): after
any sequence of cache changes it says what ``LiveVms.of`` says over the bodies the caches hold then."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.controllers.host import HostController
from vdc.controllers.orphans import LiveVmIndex, LiveVms
from vdc.kube.cache import ObjectCache
from vdc.kube.client import KubeWriter
from vdc.libvirt.connection import ConnectionManager


def vm(
    namespace: str, name: str, uid: str, *volumes: tuple[str, str], status: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    disks = [{"name": f"d{i}", "source": {"volume": {"pool": p, "name": v}}} for i, (p, v) in enumerate(volumes)]
    body: dict[str, Any] = {"metadata": {"namespace": namespace, "name": name, "uid": uid}, "spec": {"disks": disks}}
    if status:
        body["status"] = {"disks": [{"name": f"s{i}", "pool": p, "volume": v} for i, (p, v) in enumerate(status)]}
    return body


def pool(name: str, *published: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"publishedVolumes": [{"name": v} for v in published]}}


def followed(namespaces: tuple[str, ...] = ()) -> tuple[ObjectCache, ObjectCache, LiveVmIndex]:
    vms, pools = ObjectCache(), ObjectCache()
    index = LiveVmIndex(namespaces)
    index.follow(vms, pools)
    return vms, pools, index


def test_a_volume_two_vms_name_stays_live_until_both_let_go() -> None:
    vms, _pools, index = followed()
    a, b = vm("shop", "a", "u-a", ("fast", "shared.qcow2")), vm("shop", "b", "u-b", ("fast", "shared.qcow2"))
    vms.upsert(a)
    vms.upsert(b)
    vms.remove(a)
    assert ("vdc-fast", "shared.qcow2") in index.live().volumes
    vms.remove(b)
    assert index.live() == LiveVms()


def test_a_volume_a_pool_publishes_and_a_vm_names_stays_while_either_does() -> None:
    vms, pools, index = followed()
    vms.upsert(vm("shop", "a", "u-a", ("fast", "golden.qcow2")))
    pools.upsert(pool("fast", "golden.qcow2", "other.qcow2"))
    vms.remove(vm("shop", "a", "u-a"))
    assert index.live().volumes == {("vdc-fast", "golden.qcow2"), ("vdc-fast", "other.qcow2")}
    pools.upsert(pool("fast", "other.qcow2"))
    assert index.live().volumes == {("vdc-fast", "other.qcow2")}


def test_a_vm_re_created_under_its_name_replaces_its_uid_and_our_status_writes_count() -> None:
    vms, _pools, index = followed()
    key = vms.upsert(vm("shop", "web", "old-uid", ("fast", "a.qcow2")))
    vms.upsert(vm("shop", "web", "new-uid"))
    assert index.live() == LiveVms(frozenset({"new-uid"}), frozenset({("shop", "web")}))
    vms.note_status(key, {"disks": [{"name": "root", "pool": "fast", "volume": "shop_web_root.qcow2"}]})
    assert index.live().volumes == {("vdc-fast", "shop_web_root.qcow2")}


def test_the_snapshot_is_rebuilt_only_when_a_set_changed() -> None:
    vms, _pools, index = followed(("shop",))
    key = vms.upsert(vm("shop", "web", "u1", ("fast", "a.qcow2")))
    first = index.live()
    assert first.namespaces == {"shop"}
    vms.note_status(key, {"phase": "Running"})
    assert index.live() is first
    vms.note_status(key, {"disks": [{"name": "root", "pool": "fast", "volume": "b.qcow2"}]})
    second = index.live()
    assert second is not first and second.uids is first.uids and second.names is first.names


def test_what_the_caches_held_before_the_index_followed_them_counts() -> None:
    vms, pools = ObjectCache(), ObjectCache()
    vms.upsert(vm("shop", "web", "u1", ("fast", "a.qcow2")))
    pools.upsert(pool("fast", "golden.qcow2"))
    index = LiveVmIndex()
    index.follow(vms, pools)
    assert index.live() == LiveVms.of(vms, pools)


def test_the_host_controller_answers_from_the_index() -> None:
    hosts, vms, pools = ObjectCache(), ObjectCache(), ObjectCache()
    vms.upsert(vm("shop", "web", "u1", ("fast", "a.qcow2")))
    writer = cast(KubeWriter, object())
    controller = HostController(hosts, vms, ConnectionManager(), writer, pools=pools, namespaces=["shop"])
    pools.upsert(pool("fast", "golden.qcow2"))
    vms.upsert(vm("shop", "db", "u2", status=(("slow", "shop_db_root.qcow2"),)))
    assert controller.live() == LiveVms.of(vms, pools, ["shop"])
    assert len(controller.live().volumes) == 3


# --- the proof: random change sequences ----------------------------------------------------------------

NAMESPACES = ("shop", "team", "")
NAMES = ("a", "b", "c")
UIDS = ("", "u1", "u2", "u3")  # few, so that two keys share one now and then (and some bodies carry none)
POOLS = ("fast", "slow")
VOLUMES = ("x.qcow2", "y.qcow2", "z.iso")

maybe_pool = st.sampled_from((*POOLS, ""))
maybe_volume = st.sampled_from((*VOLUMES, ""))
source = st.one_of(
    st.builds(lambda p, v: {"volume": {"pool": p, "name": v}}, maybe_pool, maybe_volume),
    st.builds(
        lambda p, v: {"clone": {"pool": p, "baseVolume": v, "appliance": {"name": "app"}}}, maybe_pool, maybe_volume
    ),
    st.just({"blank": {"size": "1Gi"}}),
    st.just({}),
)
spec_disk = st.builds(lambda s: {"name": "d", "source": s}, source)
status_disk = st.builds(lambda p, v: {"name": "d", "pool": p, "volume": v}, maybe_pool, maybe_volume)
status_disks = st.lists(status_disk, max_size=3)


@st.composite
def vm_bodies(draw: st.DrawFn) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": draw(st.sampled_from(NAMES))}
    namespace = draw(st.sampled_from(NAMESPACES))
    if namespace:
        meta["namespace"] = namespace
    uid = draw(st.sampled_from((*UIDS, None)))
    if uid is not None:
        meta["uid"] = uid
    if draw(st.booleans()):
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    body: dict[str, Any] = {"metadata": meta}
    if draw(st.booleans()):
        body["spec"] = {"disks": draw(st.lists(spec_disk, max_size=4))}
    if draw(st.booleans()):
        body["status"] = {"disks": draw(status_disks), "phase": "Running"}
    return body


pool_bodies = st.builds(
    lambda name, published, has_spec: {
        "metadata": {"name": name},
        **({"spec": {"publishedVolumes": [{"name": v} for v in published]}} if has_spec else {}),
    },
    st.sampled_from(POOLS),
    st.lists(st.sampled_from(VOLUMES), max_size=3),
    st.booleans(),
)

operations = st.one_of(
    st.tuples(st.just("upsert vm"), vm_bodies()),
    st.tuples(st.just("remove vm"), vm_bodies()),  # removes whatever its key holds (or nothing)
    st.tuples(st.just("note status"), st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES), status_disks)),
    st.tuples(st.just("upsert pool"), pool_bodies),
    st.tuples(st.just("remove pool"), pool_bodies),
)


def apply(op: tuple[str, Any], vms: ObjectCache, pools: ObjectCache) -> None:
    what, arg = op
    if what == "upsert vm":
        vms.upsert(arg)
    elif what == "remove vm":
        vms.remove(arg)
    elif what == "note status":
        namespace, name, disks = arg
        vms.note_status((namespace, name), {"disks": disks})
    elif what == "upsert pool":
        pools.upsert(arg)
    else:
        pools.remove(arg)


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(operations, max_size=10),
    after=st.lists(operations, max_size=40),
    namespaces=st.sampled_from([(), ("shop",), ("shop", "team")]),
    looks=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_the_index_always_says_what_walking_the_bodies_says(
    before: list[tuple[str, Any]], after: list[tuple[str, Any]], namespaces: tuple[str, ...], looks: list[bool]
) -> None:
    vms, pools = ObjectCache(), ObjectCache()
    for op in before:  # what the caches hold when the index starts following them
        apply(op, vms, pools)
    index = LiveVmIndex(namespaces)
    index.follow(vms, pools)
    assert index.live() == LiveVms.of(vms, pools, namespaces)
    for op, look in zip(after, looks, strict=False):
        apply(op, vms, pools)
        if look:  # a snapshot taken midway must not leave a stale one behind
            assert index.live() == LiveVms.of(vms, pools, namespaces)
    assert index.live() == LiveVms.of(vms, pools, namespaces)

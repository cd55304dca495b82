"""The object cache (``kube.cache.ObjectCache``): latest body per (namespace, name), lookup by uid,
and our own status patches applied locally so the next reconcile does not write them again."""

from __future__ import annotations

from typing import Any

from vdc.kube.cache import ObjectCache, key_of
from vdc.kube.patch import merge_patch


def body(name: str, uid: str, *, namespace: str | None = "ns", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"metadata": meta, **extra}


def test_key_of_namespaced_and_cluster_scoped_objects() -> None:
    assert key_of(body("vm", "u1")) == ("ns", "vm")
    assert key_of(body("host-1", "u2", namespace=None)) == ("", "host-1")
    assert key_of({"metadata": {"name": "h", "namespace": ""}}) == ("", "h")


def test_upsert_get_and_lookup_by_uid() -> None:
    cache = ObjectCache()
    assert cache.upsert(body("vm", "u1", spec={"a": 1})) == ("ns", "vm")
    assert cache.get(("ns", "vm")) == body("vm", "u1", spec={"a": 1})
    assert cache.key_for_uid("u1") == ("ns", "vm")
    assert cache.get(("other", "vm")) is None
    assert cache.key_for_uid("nope") is None
    assert len(cache) == 1


def test_the_latest_body_wins() -> None:
    cache = ObjectCache()
    cache.upsert(body("vm", "u1", spec={"a": 1}))
    cache.upsert(body("vm", "u1", spec={"a": 2}))
    assert cache.get(("ns", "vm")) == body("vm", "u1", spec={"a": 2})
    assert len(cache) == 1


def test_an_object_recreated_under_the_same_name_forgets_the_old_uid() -> None:
    cache = ObjectCache()
    cache.upsert(body("vm", "old-uid"))
    cache.upsert(body("vm", "new-uid"))
    assert cache.key_for_uid("old-uid") is None
    assert cache.key_for_uid("new-uid") == ("ns", "vm")


def test_remove() -> None:
    cache = ObjectCache()
    cache.upsert(body("vm", "u1"))
    cache.upsert(body("vm", "u2", namespace="other"))
    assert cache.remove(body("vm", "u1")) == ("ns", "vm")
    assert cache.get(("ns", "vm")) is None
    assert cache.key_for_uid("u1") is None
    assert cache.key_for_uid("u2") == ("other", "vm")
    # Removing what is not there is harmless.
    assert cache.remove(body("vm", "u1")) == ("ns", "vm")
    assert len(cache) == 1


def test_iteration_is_over_a_snapshot() -> None:
    cache = ObjectCache()
    for i in range(3):
        cache.upsert(body(f"vm-{i}", f"u{i}"))
    seen = []
    for obj in cache:
        seen.append(obj["metadata"]["name"])
        cache.remove(obj)  # mutating while iterating must not raise
    assert sorted(seen) == ["vm-0", "vm-1", "vm-2"]
    assert len(cache) == 0


def test_note_status_applies_our_patch_locally() -> None:
    cache = ObjectCache()
    old_status = {"phase": "Starting", "host": "h1", "conditions": [{"type": "Ready", "status": "False"}]}
    cache.upsert(body("vm", "u1", spec={"x": 1}, status=old_status))
    new_status = {"phase": "Running", "host": "h1", "conditions": [{"type": "Ready", "status": "True"}]}
    cache.note_status(("ns", "vm"), merge_patch(old_status, new_status))
    got = cache.get(("ns", "vm"))
    assert got is not None
    assert got["status"] == new_status
    assert got["spec"] == {"x": 1}
    # A whole status given as the patch (what the controllers pass) also lands.
    cache.note_status(("ns", "vm"), {"phase": "Stopped"})
    got = cache.get(("ns", "vm"))
    assert got is not None
    assert got["status"]["phase"] == "Stopped"
    assert got["status"]["host"] == "h1"


def test_note_status_on_an_object_without_status_or_not_cached() -> None:
    cache = ObjectCache()
    cache.upsert(body("vm", "u1"))
    cache.note_status(("ns", "vm"), {"phase": "Running"})
    got = cache.get(("ns", "vm"))
    assert got is not None
    assert got["status"] == {"phase": "Running"}
    cache.note_status(("ns", "missing"), {"phase": "Running"})
    assert cache.get(("ns", "missing")) is None


def test_note_status_does_not_mutate_the_body_the_watch_delivered() -> None:
    cache = ObjectCache()
    delivered = body("vm", "u1", status={"phase": "Starting"})
    cache.upsert(delivered)
    cache.note_status(("ns", "vm"), {"phase": "Running"})
    assert delivered["status"] == {"phase": "Starting"}


def test_a_field_our_status_write_drops_is_gone_from_the_cache_too() -> None:
    cache = ObjectCache()
    old_status = {"phase": "Downloading", "progress": {"bytesDone": 10}}
    cache.upsert(body("appl", "u1", status=old_status))
    new_status = {"phase": "Ready"}
    cache.note_status(("ns", "appl"), merge_patch(old_status, new_status))  # what KubeWriter.patch_status returns
    got = cache.get(("ns", "appl"))
    assert got is not None and got["status"] == new_status


def test_objects_of_one_namespace_are_found_without_the_others() -> None:
    cache = ObjectCache()
    for ns, name in (("a", "x"), ("a", "y"), ("b", "x")):
        cache.upsert({"metadata": {"namespace": ns, "name": name, "uid": f"{ns}-{name}"}})
    assert [b["metadata"]["name"] for b in cache.in_namespace("a")] == ["x", "y"]
    cache.remove({"metadata": {"namespace": "a", "name": "x"}})
    cache.remove({"metadata": {"namespace": "b", "name": "x"}})
    assert [b["metadata"]["name"] for b in cache.in_namespace("a")] == ["y"]
    assert cache.in_namespace("b") == [] and cache.in_namespace("nowhere") == []


def test_primed_objects_the_watch_never_delivers_are_dropped_and_confirmed_ones_kept() -> None:
    cache = ObjectCache()
    cache.prime([body("kept", "u1"), body("gone", "u2"), body("deleted-by-watch", "u3")])
    assert len(cache) == 3
    cache.upsert(body("kept", "u1", status={"phase": "Running"}))  # the watch's initial listing
    cache.remove(body("deleted-by-watch", "u3"))
    assert cache.drop_unconfirmed() == [("ns", "gone")]
    assert [key_of(b) for b in cache] == [("ns", "kept")]
    assert cache.key_for_uid("u2") is None
    assert cache.drop_unconfirmed() == []  # only once: later objects are the watch's


def test_what_the_watch_delivered_is_kept_apart_from_the_statuses_noted_since() -> None:
    """A watch event is compared with the body as last delivered: our own status write coming back (a Host
    turning Ready) is the change it is, not "no change" against the copy the cache noted."""
    cache = ObjectCache()
    delivered = body("host", "u1", status={"phase": "Pending"})
    cache.upsert(delivered)
    assert cache.delivered(("ns", "host")) is delivered  # nothing noted: the same body
    cache.note_status(("ns", "host"), {"phase": "Ready"})
    cache.note_status(("ns", "host"), {"allocated": 1})
    assert (cache.get(("ns", "host")) or {})["status"] == {"phase": "Ready", "allocated": 1}
    assert cache.delivered(("ns", "host")) is delivered  # the first noted status did not replace it
    echoed = body("host", "u1", status={"phase": "Ready", "allocated": 1})
    cache.upsert(echoed)  # the watch delivers our write
    assert cache.delivered(("ns", "host")) is echoed
    cache.note_status(("ns", "host"), {"phase": "Gone"})
    cache.remove(echoed)
    assert cache.delivered(("ns", "host")) is None  # nothing kept for what went


def _vm(version: str, **meta: Any) -> dict[str, Any]:
    base = {"name": "vm", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": version}
    return {"metadata": {**base, **meta}, "spec": {"a": 1}}


def test_our_finalizer_patch_coming_back_is_recognised_whenever_its_answer_is_read() -> None:
    cache = ObjectCache()
    key = cache.upsert(_vm("10"))
    cache.expect_own_finalizer(key, "10", "vdc.dev/finalizer")
    ours = _vm("11", finalizers=["vdc.dev/finalizer"], managedFields=[{"manager": "vdc"}])
    assert cache.own_write(ours)
    cache.upsert(ours)
    assert not cache.own_write(_vm("12", finalizers=["vdc.dev/finalizer"]))  # once: the expectation is over


def test_anything_else_in_the_version_after_our_finalizer_patch_is_a_change() -> None:
    others = {
        "someone else's edit came first": _vm("11", labels={"x": "y"}),
        "a label with our finalizer": _vm("11", finalizers=["vdc.dev/finalizer"], labels={"x": "y"}),
        "another finalizer": _vm("11", finalizers=["other/one"]),
        "the spec": {**_vm("11", finalizers=["vdc.dev/finalizer"]), "spec": {"a": 2}},
        "a status": {**_vm("11", finalizers=["vdc.dev/finalizer"]), "status": {"phase": "Running"}},
    }
    for what, event in others.items():
        cache = ObjectCache()
        key = cache.upsert(_vm("10"))
        cache.expect_own_finalizer(key, "10", "vdc.dev/finalizer")
        assert not cache.own_write(event), what
    cache = ObjectCache()
    key = cache.upsert(_vm("10"))
    cache.expect_own_finalizer(key, "9", "vdc.dev/finalizer")  # made on an older version than the watch's
    assert not cache.own_write(_vm("11", finalizers=["vdc.dev/finalizer"]))
    cache.expect_own_finalizer(key, "10", "vdc.dev/finalizer")
    cache.remove(_vm("10"))
    assert not cache.own_write(_vm("11", finalizers=["vdc.dev/finalizer"]))  # gone: nothing expected


def test_the_watch_event_of_our_finalizer_patch_is_not_a_change_and_anyone_else_s_is() -> None:
    from vdc.handlers import _take_in  # the watch's intake: what it calls a change is queued for a reconcile

    cache = ObjectCache()
    assert _take_in(cache, {"type": "ADDED", "object": _vm("10")}).changed
    cache.expect_own_finalizer(("ns", "vm"), "10", "vdc.dev/finalizer")
    ours = _vm("11", finalizers=["vdc.dev/finalizer"])
    assert not _take_in(cache, {"type": "MODIFIED", "object": ours}).changed
    assert cache.get(("ns", "vm")) == ours  # taken in all the same
    labelled = _vm("12", finalizers=["vdc.dev/finalizer"], labels={"x": "y"})
    assert _take_in(cache, {"type": "MODIFIED", "object": labelled}).changed

"""The VM controller's orchestration (place → provision → converge → report) with fakes at its two edges
only: libvirt is libvirt's own in-process test driver behind a fake host connection (one private
driver state per host, every call recorded, chosen calls failing), and the API server is a fake
KubeWriter over real ObjectCaches. Everything between — tenancy, scheduler, disk sources, domain
XML, the plan, ``vm_status`` — is the real code."""

from __future__ import annotations

import asyncio
import copy
import functools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vdc.api.meta import FINALIZER
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.computecluster import admission_hook
from vdc.controllers.errors import ReportedFailure
from vdc.controllers.evacuation import maintenance_stop
from vdc.controllers.storagepool import libvirt_pool_name
from vdc.controllers.vm import (
    DELETION_RETRY_SECONDS,
    DOMAIN_ON_SEVERAL_HOSTS,
    FINALIZER_RETRY_SECONDS,
    ORPHAN_ANNOTATION,
    VmController,
    _with_scheduled,
)
from vdc.controllers.vm_status import Event
from vdc.kube.cache import ObjectCache, key_of
from vdc.kube.client import StatusWritten
from vdc.kube.patch import merge_patch
from vdc.libvirt import storage
from vdc.libvirt.errors import HostUnreachable, translate
from vdc.libvirt.storage_xml import PoolConfig, VolumeConfig

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

T = TypeVar("T")
NS, NAME = "shop", "web"
Journal = list[tuple[str, ...]]


# --- the libvirt edge ---------------------------------------------------------------------------
class RecordingLibvirt:
    """A test-driver connection that records each call made on it and fails the ones named in ``fail``."""

    def __init__(self, inner: Any, host: str, journal: Journal) -> None:
        self._inner, self._host, self._journal = inner, host, journal
        self.fail: dict[str, str] = {}
        self.fail_domain: dict[str, str] = {}
        """Methods of the domains it hands out that fail (``create``: a start), not recorded."""
        self.current: list[str] = []
        """The calls made within the host's current ``call`` (FakeHost.calls)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._journal.append(("libvirt", self._host, name))
            self.current.append(name)
            if name in self.fail:
                libvirt.virResetLastError()  # the message is ours, not a stale one from an earlier lookup
                raise libvirt.libvirtError(self.fail[name])
            result = attr(*args, **kwargs)
            return FailingDomain(result, self.fail_domain) if isinstance(result, libvirt.virDomain) else result

        return call


class FailingDomain:
    """A test-driver domain whose methods named in ``fail`` fail."""

    def __init__(self, inner: Any, fail: dict[str, str]) -> None:
        self._inner, self._fail = inner, fail

    def __getattr__(self, name: str) -> Any:
        if name not in self._fail:
            return getattr(self._inner, name)

        def failing(*args: Any, **kwargs: Any) -> Any:
            libvirt.virResetLastError()
            raise libvirt.libvirtError(self._fail[name])

        return failing


class FakeHost:
    """What the controller uses of a HostConnection: ``connected``, ``last_error``, ``call``."""

    def __init__(self, name: str, node_xml: Path, journal: Journal) -> None:
        self.name = name
        self.connected = True
        self.last_error: str | None = None
        self.raw = libvirt.open(f"test://{node_xml}")  # its own driver state: a host of its own
        self.libvirt = RecordingLibvirt(self.raw, name, journal)
        self.calls: list[list[str]] = []
        """The libvirt calls made in each ``call`` (each one thread hop in a HostConnection)."""

    async def call(self, fn: Callable[[Any], T]) -> T:
        if not self.connected:
            raise HostUnreachable(f"host {self.name} is not connected: {self.last_error}")
        self.calls.append([])
        self.libvirt.current = self.calls[-1]
        try:
            return fn(self.libvirt)
        except libvirt.libvirtError as exc:
            raise translate(exc) from exc

    def holds_domain(self, uid: str) -> bool | None:
        return None  # no index of its domains: asked each time

    def domain(self, uid: str) -> Any | None:
        try:
            return self.raw.lookupByUUIDString(uid)
        except libvirt.libvirtError:
            return None


class FakeConnections:
    def __init__(self, hosts: dict[str, FakeHost]) -> None:
        self.hosts = hosts

    def get(self, name: str) -> FakeHost | None:
        return self.hosts.get(name)

    def names(self) -> list[str]:
        return list(self.hosts)


class FakeHostController:
    def facts(self, host: str) -> None:
        return None  # read from the host itself


# --- the API edge -------------------------------------------------------------------------------
class FakeWriter:
    """KubeWriter: a status patch is recorded and returned as sent; Events are recorded."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, bool]] = []
        self.last_version = 1000
        self.versions: dict[str, str] = {}
        """uid -> the resourceVersion of the last status write."""

    async def patch_status(
        self, kind: Any, body: dict[str, Any], status: dict[str, Any], unchanged: bool = False
    ) -> dict[str, Any]:
        return (await self.write_status(kind, body, status, unchanged=unchanged)).patch

    async def write_status(
        self, kind: Any, body: dict[str, Any], status: dict[str, Any], unchanged: bool = False
    ) -> StatusWritten:
        """As the API server: every write gives the object a new resourceVersion (kept by uid for the watch)."""
        self.journal.append(("status", str(status.get("phase")), str(status.get("host"))))
        self.statuses.append(copy.deepcopy(status))
        self.last_version += 1
        self.versions[str(body["metadata"].get("uid"))] = str(self.last_version)
        return StatusWritten(merge_patch(body.get("status") or {}, status), str(self.last_version))

    async def event(self, kind: Any, body: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self.journal.append(("event", reason))
        self.events.append((reason, message, warning))

    async def patch_spec(self, kind: Any, body: dict[str, Any], spec: dict[str, Any]) -> None:
        raise AssertionError("the VM controller wrote a spec")

    async def add_finalizer(self, kind: Any, body: dict[str, Any], finalizer: str) -> dict[str, Any]:
        self.journal.append(("finalizer", finalizer))
        meta = body["metadata"]
        return {**body, "metadata": {**meta, "finalizers": [*(meta.get("finalizers") or []), finalizer]}}

    async def remove_finalizer(self, kind: Any, body: dict[str, Any], finalizer: str) -> bool:
        self.journal.append(("unfinalized", finalizer))
        return self.finalizers_unchanged

    finalizers_unchanged = True
    """What ``remove_finalizer`` finds: False, the object's finalizers changed meanwhile (refused)."""

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        raise AssertionError("no Secret expected")


# --- the rig ------------------------------------------------------------------------------------
def host_body(name: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"host-{name}", "labels": {}},
        "spec": {"uri": "test:///default", "hostFiles": {"allowedPaths": ["/boot"]}},
        "status": {
            "allocatable": {"cpus": 8, "memory": "8Gi"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def vm_body(strategy: str = "Always", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {
            "runStrategy": strategy,
            "cpu": {"count": 1},
            "memory": {"size": "64Mi"},
            "boot": {"kernel": {"kernel": "/boot/vmlinuz"}},
            **spec,
        },
    }


class Rig:
    def __init__(self, tmp_path: Path, *hosts: tuple[str, bool]) -> None:
        node = tmp_path / "node.xml"
        node.write_text("<node>\n</node>\n")
        self.journal: Journal = []
        self.hosts = {name: FakeHost(name, node, self.journal) for name, _ in hosts}
        self.vms, host_cache = ObjectCache(), ObjectCache()
        for name, ready in hosts:
            host_cache.upsert(host_body(name, ready))
        self.writer = FakeWriter(self.journal)
        self.controller = VmController(
            self.vms,
            host_cache,
            FakeConnections(self.hosts),
            self.writer,
            FakeHostController(),  # type: ignore[arg-type]
        )

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.vms.upsert(body)
        return body

    def reconcile(self, body: dict[str, Any]) -> float | None:
        return asyncio.run(self.controller.reconcile(key_of(body)))

    def watch_delivers_writes(self, body: dict[str, Any]) -> None:
        """The VM's watch event after our status write: the cached body (status noted) at the write's version."""
        cached = self.vms.get(key_of(body))
        assert cached is not None
        version = self.writer.versions[str(cached["metadata"]["uid"])]
        self.vms.upsert({**cached, "metadata": {**cached["metadata"], "resourceVersion": version}})

    def status(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict((self.vms.get(key_of(body)) or {}).get("status") or {})

    def condition(self, body: dict[str, Any], type_: str) -> dict[str, Any]:
        return next(c for c in self.status(body).get("conditions", []) if c["type"] == type_)

    def reasons(self) -> list[str]:
        return [reason for reason, _, _ in self.writer.events]


def define_foreign_copy(host: FakeHost, uid: str, name: str) -> None:
    """A domain with the VM's UUID made on ``host`` outside this controller's run (an older crash)."""
    host.raw.defineXML(
        f"<domain type='test'><name>{name}</name><uuid>{uid}</uuid><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )


# --- the orchestration --------------------------------------------------------------------------
def test_a_new_vm_is_placed_provisioned_on_the_chosen_host_and_reported_ready(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", False), ("hv2", True))  # hv1 is not Ready: the scheduler picks hv2
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    assert rig.reconcile(vm) is None
    status = rig.status(vm)
    assert (status["phase"], status["host"], status["domainUuid"]) == ("Running", "hv2", uid)
    assert status["domainName"] == f"{NS}_{NAME}" and status["bootTime"]
    assert rig.condition(vm, "Ready")["status"] == "True"
    assert rig.condition(vm, "Reconciling")["status"] == "False"
    assert rig.condition(vm, "Stalled")["status"] == "False"
    assert rig.condition(vm, "Scheduled")["message"] == "placed on host hv2"
    assert rig.hosts["hv1"].domain(uid) is None
    domain = rig.hosts["hv2"].domain(uid)
    assert domain is not None and domain.isActive()
    # one Event for a new VM: why it was placed there folded into the Started one
    assert rig.reasons() == ["Started"]
    assert rig.writer.events[0][1].startswith(f"domain {NS}_{NAME} started on hv2; scheduled: ")
    writes = len(rig.writer.statuses)
    assert rig.reconcile(vm) is None and len(rig.writer.statuses) == writes  # steady state: no write


def test_the_placement_is_written_before_anything_is_made_on_the_host(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    placed = rig.journal.index(("status", "Provisioning", "hv1"))
    looks = ("lookupByUUIDString", "getCapabilities", "getInfo", "getHostname", "getLibVersion", "getVersion")
    made = [i for i, entry in enumerate(rig.journal) if entry[:2] == ("libvirt", "hv1") and entry[2] not in looks]
    assert made and placed < min(made)
    assert rig.writer.statuses[0]["host"] == "hv1"
    # and our finalizer before both: a VM deleted from then on always comes through the controller
    assert rig.journal.index(("finalizer", "vdc.dev/finalizer")) < placed


def test_a_vm_placed_just_now_is_defined_without_looking_its_domain_up_first(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    rig.reconcile(vm)

    def before_define(since: int = 0) -> list[str]:
        calls = [entry[2] for entry in rig.journal[since:] if entry[:2] == ("libvirt", "hv1")]
        return calls[: calls.index("defineXML")]

    # The hosts were asked before placing (no index of their domains here); none held it, so nothing is
    # looked up again between the placement and the define.
    placed = rig.journal.index(("status", "Provisioning", "hv1"))
    assert "lookupByUUIDString" in before_define() and "lookupByUUIDString" not in before_define(placed)
    # Placed before (its status names the host): looked up first, as its domain may be there or not.
    domain = rig.hosts["hv1"].domain(uid)
    domain.destroy()
    domain.undefine()
    rig.journal.clear()
    rig.reconcile(rig.vms.get(key_of(vm)) or {})
    assert "lookupByUUIDString" in before_define()
    assert rig.hosts["hv1"].domain(uid).isActive()


def test_a_new_vms_define_start_and_read_back_are_one_call_on_its_host(tmp_path: Path) -> None:
    """One thread hop for the plan's actions and the domain read back, not one for each; and no lookup of the
    domain the define returned (start and the read back looked it up again: a round trip each)."""
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    [made] = [names for names in rig.hosts["hv1"].calls if "defineXML" in names]
    assert made == ["defineXML"]
    assert rig.hosts["hv1"].domain(vm["metadata"]["uid"]).isActive() and rig.status(vm)["phase"] == "Running"


def test_a_vm_that_changed_before_its_finalizer_was_added_is_looked_at_again_not_placed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())

    async def changed_meanwhile(kind: Any, body: dict[str, Any], finalizer: str) -> None:
        return None  # the resourceVersion test failed

    rig.writer.add_finalizer = changed_meanwhile  # type: ignore[method-assign]
    assert rig.reconcile(vm) == 0.5
    assert rig.writer.statuses == [] and rig.hosts["hv1"].domain(vm["metadata"]["uid"]) is None


def test_a_libvirt_failure_reaches_ready_false_with_its_message(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    rig.hosts["hv1"].libvirt.fail["defineXML"] = "disk image is locked by another process"
    vm = rig.add(vm_body())
    with pytest.raises(ReportedFailure, match=r"host hv1: .*locked by another process"):
        rig.reconcile(vm)
    ready = rig.condition(vm, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "LibvirtError"
    assert "disk image is locked by another process" in ready["message"]
    assert rig.condition(vm, "Reconciling")["status"] == "True"
    assert rig.status(vm)["host"] == "hv1"  # where it happened: deletion looks there
    assert ("LibvirtError", ready["message"], True) in rig.writer.events
    with pytest.raises(ReportedFailure):
        rig.reconcile(vm)
    assert rig.reasons().count("LibvirtError") == 1  # once per distinct message
    del rig.hosts["hv1"].libvirt.fail["defineXML"]
    rig.reconcile(vm)
    assert rig.condition(vm, "Ready")["status"] == "True"


def test_the_started_event_of_our_own_start_is_ours_once_and_a_failed_start_leaves_none_expected(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    rig.hosts["hv1"].libvirt.fail_domain["create"] = "connection reset"  # the start
    with pytest.raises(ReportedFailure):
        rig.reconcile(vm)
    assert rig.hosts["hv1"].domain(uid) is not None and not rig.hosts["hv1"].domain(uid).isActive()
    assert not rig.controller.own_start("hv1", uid)  # no start made: a STARTED event would be someone else's
    del rig.hosts["hv1"].libvirt.fail_domain["create"]
    rig.reconcile(rig.vms.get(key_of(vm)) or {})
    assert rig.hosts["hv1"].domain(uid).isActive()
    assert not rig.controller.own_start("hv2", uid)  # another host's event is not it
    assert rig.controller.own_start("hv1", uid)  # its STARTED event: the reconcile read the domain back already
    assert not rig.controller.own_start("hv1", uid)  # once per start


def test_provision_works_on_an_explicit_host_other_than_status_host(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True), ("hv2", True))
    for host in rig.hosts.values():
        storage.ensure_pool(host.raw, PoolConfig(name=libvirt_pool_name("fast"), type="dir", target_path="/vdc/fast"))
    vm = vm_body(disks=[{"name": "data", "source": {"blank": {"pool": "fast", "size": "1Gi"}}}])
    vm["status"] = {"host": "hv1"}
    rig.add(vm)
    made = asyncio.run(rig.controller.provision(VirtualMachine.model_validate(vm), "hv2"))
    assert made.host == "hv2" and made.desired.uuid == vm["metadata"]["uid"]
    assert made.desired.domain_type == "test"  # from hv2's own facts
    assert [(d.name, d.host, d.volume) for d in made.disks] == [("data", "hv2", f"{NS}_{NAME}_data.qcow2")]
    assert made.desired.disks[0].source_file == made.disks[0].path
    volume = f"{NS}_{NAME}_data.qcow2"
    assert storage.observe_volume(rig.hosts["hv2"].raw, libvirt_pool_name("fast"), volume) is not None
    assert storage.observe_volume(rig.hosts["hv1"].raw, libvirt_pool_name("fast"), volume) is None
    assert not [e for e in rig.journal if e[:2] == ("libvirt", "hv1")]  # status.host untouched
    assert rig.writer.statuses == [] and rig.writer.events == []  # nothing written to the API


def test_two_hosts_holding_the_domain_is_reported_not_resolved_silently(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True), ("hv2", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    for host in rig.hosts.values():
        define_foreign_copy(host, uid, f"{NS}_{NAME}")
    assert rig.reconcile(vm) is not None  # looked at again later
    stalled = rig.condition(vm, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == DOMAIN_ON_SEVERAL_HOSTS
    assert "hv1, hv2" in stalled["message"]
    assert rig.condition(vm, "Ready")["status"] == "False"
    assert rig.status(vm).get("host") is None  # neither was picked
    assert rig.reasons() == [DOMAIN_ON_SEVERAL_HOSTS]
    rig.reconcile(vm)
    assert rig.reasons() == [DOMAIN_ON_SEVERAL_HOSTS]  # one Event, not one per look
    # Deletion removes it from every holder.
    outcome = asyncio.run(rig.controller.delete(rig.vms.get(key_of(vm)) or vm))
    assert "hv1" in outcome and "hv2" in outcome
    assert rig.hosts["hv1"].domain(uid) is None and rig.hosts["hv2"].domain(uid) is None


def test_one_host_holding_the_domain_is_adopted(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True), ("hv2", True))
    vm = rig.add(vm_body())
    define_foreign_copy(rig.hosts["hv2"], vm["metadata"]["uid"], f"{NS}_{NAME}")
    rig.reconcile(vm)
    assert rig.status(vm)["host"] == "hv2" and rig.status(vm)["phase"] == "Running"
    assert "Scheduled" not in rig.reasons()  # adopted, not scheduled


def test_halted_stops_the_domain(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    rig.reconcile(vm)
    assert rig.hosts["hv1"].domain(uid).isActive()
    halted = copy.deepcopy(rig.vms.get(key_of(vm)) or {})
    halted["spec"]["runStrategy"] = "Halted"
    halted["metadata"]["generation"] = 2
    rig.vms.upsert(halted)
    rig.reconcile(halted)
    assert not rig.hosts["hv1"].domain(uid).isActive()
    status = rig.status(vm)
    assert status["phase"] == "Stopped" and status["observedGeneration"] == 2
    assert rig.condition(vm, "Ready")["status"] == "True"  # stopped as the spec says: Ready
    assert ("libvirt", "hv1", "lookupByUUIDString") in rig.journal
    assert "Stopping" in rig.reasons()


def test_an_unreachable_host_makes_ready_unknown(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    rig.hosts["hv1"].connected = False
    rig.hosts["hv1"].last_error = "connection reset"
    assert rig.reconcile(vm) == 15.0
    ready = rig.condition(vm, "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "HostUnreachable")
    assert "connection reset" in ready["message"]
    assert rig.status(vm)["phase"] == "Unknown" and rig.condition(vm, "Reconciling")["status"] == "True"


def test_an_access_refusal_is_reported_before_anything_is_placed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body(boot={"kernel": {"kernel": "/etc/shadow"}}))
    assert rig.reconcile(vm) is None
    stalled = rig.condition(vm, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "AccessDenied"
    assert rig.status(vm).get("host") is None
    assert not [e for e in rig.journal if e[0] == "libvirt"]


def test_a_vm_owned_by_an_operation_is_not_converged_until_it_is_released(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    uid = vm["metadata"]["uid"]
    owned = copy.deepcopy(rig.vms.get(key_of(vm)) or {})
    owned["metadata"]["generation"] = 2
    owned["spec"]["runStrategy"] = "Halted"  # a change that converging would act on
    owned["status"]["operation"] = {"kind": "VirtualMachineMigration", "name": "move-web", "uid": "op-1"}
    rig.vms.upsert(owned)
    calls, writes = len(rig.journal), len(rig.writer.statuses)
    assert rig.reconcile(owned) is None
    assert rig.hosts["hv1"].domain(uid).isActive()  # type: ignore[union-attr]
    assert len(rig.writer.statuses) == writes and not any(c[0] == "libvirt" for c in rig.journal[calls:])
    released = copy.deepcopy(owned)
    released["status"].pop("operation")
    rig.vms.upsert(released)
    rig.reconcile(released)
    assert not rig.hosts["hv1"].domain(uid).isActive()  # type: ignore[union-attr]


# --- operations and maintenance ---------------------------------------------------------------
def test_a_vm_an_operation_owns_is_neither_converged_nor_reported(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    vm["status"] = {"phase": "Running", "host": "hv1", "printableStatus": "Migrating",
                    "operation": {"kind": "VirtualMachineMigration", "name": "move-it", "uid": "m-1"}}  # fmt: skip
    assert rig.reconcile(vm) is None
    assert rig.writer.statuses == [] and rig.writer.events == []
    assert rig.hosts["hv1"].domain(vm["metadata"]["uid"]) is None  # not made again behind the operation's back


def test_a_vm_whose_owning_operation_is_gone_is_taken_back_with_an_event(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    asked: list[tuple[str, str]] = []

    def exists(namespace: str, ref: Any) -> bool:
        asked.append((namespace, ref.name))
        return False

    rig.controller.operation_exists = exists
    vm = rig.add(vm_body())
    vm["status"] = {"operation": {"kind": "VirtualMachineMigration", "name": "gone", "uid": "m-2"}}
    rig.reconcile(vm)
    assert asked == [(NS, "gone")]
    assert "operation" not in rig.writer.statuses[0]  # released first
    status = rig.status(vm)
    assert "operation" not in status and status["phase"] == "Running" and status["host"] == "hv1"
    assert rig.reasons()[0] == "OperationGone"


def test_a_shutdown_vm_stops_while_its_host_is_in_maintenance_and_starts_after(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    migrations = ObjectCache()
    rig.controller.maintenance_stop = functools.partial(maintenance_stop, rig.controller.cluster, migrations)
    vm = rig.add(vm_body(evictionStrategy="Shutdown", terminationGracePeriodSeconds=0))
    rig.reconcile(vm)
    uid = vm["metadata"]["uid"]
    assert rig.status(vm)["phase"] == "Running"
    host = rig.controller.hosts.get(("", "hv1"))
    assert host is not None
    rig.controller.hosts.upsert({**host, "spec": {**host["spec"], "maintenance": True}})
    for _ in range(3):
        rig.reconcile(vm)
    status = rig.status(vm)
    assert status["phase"] == "Stopped", status
    assert rig.condition(vm, "Ready")["reason"] == "HostMaintenance"
    assert "maintenance" in rig.condition(vm, "Ready")["message"]
    assert not rig.hosts["hv1"].domain(uid).isActive()
    rig.controller.hosts.upsert(host)  # maintenance over
    rig.reconcile(vm)
    assert rig.status(vm)["phase"] == "Running"
    assert rig.hosts["hv1"].domain(uid).isActive()


def test_a_live_migrate_vm_keeps_running_on_a_host_in_maintenance_until_it_is_moved(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    rig.controller.maintenance_stop = functools.partial(maintenance_stop, rig.controller.cluster, ObjectCache())
    vm = rig.add(vm_body())  # evictionStrategy LiveMigrate by default
    rig.reconcile(vm)
    host = rig.controller.hosts.get(("", "hv1"))
    assert host is not None
    rig.controller.hosts.upsert({**host, "spec": {**host["spec"], "maintenance": True}})
    rig.reconcile(vm)
    assert rig.status(vm)["phase"] == "Running"


def test_deleting_a_vm_made_from_an_appliance_deletes_its_overlay_even_with_the_appliance_gone(tmp_path: Path) -> None:
    """The overlay's name does not depend on its base: a VM outliving its appliance (or moved to another
    host by a migration) still has its volumes removed with it."""
    rig = Rig(tmp_path, ("hv1", True))
    pool = libvirt_pool_name("fast")
    raw = rig.hosts["hv1"].raw
    storage.ensure_pool(raw, PoolConfig(name=pool, type="dir", target_path="/vdc/fast"))
    vm = vm_body(disks=[{"name": "root", "source": {"clone": {"pool": "fast", "appliance": {"name": "gone"}}}}])
    volume = f"{NS}_{NAME}_root.qcow2"
    storage.create_volume(raw, pool, VolumeConfig(name=volume, capacity_bytes=2**20, format="qcow2"))
    vm["status"] = {"host": "hv1", "disks": [{"name": "root", "host": "hv1", "pool": "fast", "volume": volume,
                                              "access": "Owned"}]}  # fmt: skip
    rig.add(vm)
    outcome = asyncio.run(rig.controller.delete(vm))
    assert volume in outcome
    assert storage.observe_volume(raw, pool, volume) is None


def test_a_vm_that_would_break_its_cluster_s_admission_control_is_not_placed_until_it_fits(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True), ("hv2", True))  # 8 CPUs, 8Gi each: one failure tolerated leaves 8, 8Gi
    clusters = ObjectCache()
    prod = {
        "metadata": {"name": "prod"},
        "spec": {"ha": {"enabled": True, "admissionControl": {"policy": "HostFailuresTolerated"}}},
    }
    clusters.upsert(prod)
    rig.controller.admission_refusals = admission_hook(clusters, rig.controller.hosts, rig.controller.cluster)
    first = rig.add(vm_body(cpu={"count": 6}))
    rig.reconcile(first)
    assert rig.status(first)["phase"] == "Running"
    second = vm_body(cpu={"count": 4})
    second["metadata"]["name"] = "db"
    rig.add(second)
    rig.reconcile(second)  # room on the other host, but not once a host's worth is kept free
    status = rig.status(second)
    assert status["phase"] == "Scheduling" and not status.get("host")
    scheduled = rig.condition(second, "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert scheduled["message"] == (
        "0/2 hosts fit: 1 has too little CPU (need 4, 2 free on hv1), 1 would break its ComputeCluster's admission "
        "control; ComputeCluster prod: admission control (1 host failure tolerated) leaves 2 vCPUs and 7.9Gi free; "
        "the VM asks 4 vCPUs and 64Mi (2 vCPUs short)"
    )
    assert "FailedScheduling" in rig.reasons()
    clusters.upsert({**prod, "spec": {"ha": {"enabled": False}}})  # the watch requeues it: it fits now
    rig.reconcile(second)
    assert rig.status(second)["phase"] == "Running" and rig.status(second)["host"] == "hv2"


def test_a_pending_scheduled_event_is_folded_into_started_or_posted_first() -> None:
    scheduled = Event("Scheduled", "host hv2: most room")
    started = Event("Started", "domain ns_vm started on hv2")
    folded = _with_scheduled([started], scheduled)
    assert [(e.reason, e.message) for e in folded] == [
        ("Started", "domain ns_vm started on hv2; scheduled: host hv2: most room")
    ]
    waiting = Event("LibvirtError", "no", warning=True)
    assert _with_scheduled([waiting], scheduled) == [scheduled, waiting]  # did not start: said on its own
    assert _with_scheduled([], scheduled) == [scheduled]
    assert _with_scheduled([started], None) == [started]


# --- deletion: in the VM queue, then our finalizer ---------------------------------------------
def _being_deleted(rig: Rig, vm: dict[str, Any], finalizers: tuple[str, ...] = (FINALIZER,)) -> dict[str, Any]:
    """The VM as the watch delivers it once deleted: the cached body with a deletionTimestamp."""
    deleted = copy.deepcopy(rig.vms.get(key_of(vm)) or vm)
    deleted["metadata"].update(deletionTimestamp="2026-12-06T20:00:00Z", finalizers=list(finalizers))
    return rig.add(deleted)


def test_a_deleted_vm_loses_its_domain_then_our_finalizer(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    rig.reconcile(vm)
    assert rig.hosts["hv1"].domain(uid).isActive()
    _being_deleted(rig, vm)
    rig.journal.clear()
    writes = len(rig.writer.statuses)
    assert rig.reconcile(vm) is None
    assert rig.hosts["hv1"].domain(uid) is None
    assert rig.journal[-1] == ("unfinalized", FINALIZER)  # last, once the domain is gone
    assert len(rig.writer.statuses) == writes and rig.reasons() == ["Started"]  # nothing else written
    rig.journal.clear()
    assert rig.reconcile(vm) is None  # an older event still showing our finalizer: done already
    assert rig.journal == []


def test_a_deletion_that_must_wait_says_why_once_and_is_tried_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    uid = vm["metadata"]["uid"]
    rig.reconcile(vm)
    _being_deleted(rig, vm)
    rig.hosts["hv1"].connected = False
    assert rig.reconcile(vm) == DELETION_RETRY_SECONDS
    assert rig.reconcile(vm) == DELETION_RETRY_SECONDS
    blocked = [(reason, message) for reason, message, warning in rig.writer.events if warning]
    assert len(blocked) == 1 and blocked[0][0] == "DeletionBlocked"  # one Event, not one per retry
    assert "host hv1 is unreachable" in blocked[0][1] and ORPHAN_ANNOTATION in blocked[0][1]  # what to do
    assert ("unfinalized", FINALIZER) not in rig.journal
    rig.hosts["hv1"].connected = True  # the host is back: the retry finishes it
    assert rig.reconcile(vm) is None
    assert rig.hosts["hv1"].domain(uid) is None and rig.journal[-1] == ("unfinalized", FINALIZER)


def test_a_finalizer_list_changed_meanwhile_is_looked_at_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    _being_deleted(rig, vm, (FINALIZER, "other.example/keep"))
    rig.writer.finalizers_unchanged = False
    assert rig.reconcile(vm) == FINALIZER_RETRY_SECONDS
    rig.writer.finalizers_unchanged = True
    assert rig.reconcile(vm) is None  # again, idempotently: the domain is gone already


def test_a_vm_being_deleted_without_our_finalizer_is_left_alone(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    rig.reconcile(vm)
    _being_deleted(rig, vm, ("other.example/keep",))
    rig.journal.clear()
    assert rig.reconcile(vm) is None
    assert rig.journal == []  # not ours to delete: nothing asked of libvirt or the API


# --- the safety-net resync's verify: a settled VM checked against its domain without a full reconcile -----
def test_a_settled_vm_verifies_until_its_domain_or_its_object_changes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add({**vm_body(), "metadata": {**vm_body()["metadata"], "resourceVersion": "7"}})
    key, uid = key_of(vm), vm["metadata"]["uid"]
    assert rig.reconcile(vm) is None and rig.status(vm)["phase"] == "Running"
    rig.watch_delivers_writes(vm)  # the VM at the version its Running status was written at
    writes = (len(rig.writer.statuses), len(rig.writer.events))
    assert asyncio.run(rig.controller.verify(key))  # as settled: nothing to do
    assert (len(rig.writer.statuses), len(rig.writer.events)) == writes  # nothing written
    rig.hosts["hv1"].raw.lookupByUUIDString(uid).destroy()  # behind our back
    assert not asyncio.run(rig.controller.verify(key))  # a full reconcile, which starts it again
    rig.reconcile(vm)
    assert rig.hosts["hv1"].domain(uid).isActive()
    assert asyncio.run(rig.controller.verify(key))  # the same status: nothing written, the same version
    rig.add({**vm, "metadata": {**vm["metadata"], "resourceVersion": "8"}})  # the object changed
    assert not asyncio.run(rig.controller.verify(key))


def test_a_settled_vm_verifies_before_the_watch_brings_its_own_status_write_back(tmp_path: Path) -> None:
    """A resync round between the status write and its watch event: the cached body still has the version
    from before the write, and that is not a change (a full reconcile for nothing, and a flaky count)."""
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add({**vm_body(), "metadata": {**vm_body()["metadata"], "resourceVersion": "7"}})
    key = key_of(vm)
    assert rig.reconcile(vm) is None and rig.status(vm)["phase"] == "Running"
    assert rig.vms.status_pending(key)
    assert asyncio.run(rig.controller.verify(key))
    rig.add({**vm, "metadata": {**vm["metadata"], "resourceVersion": "8"}})  # someone else's change came
    assert not rig.vms.status_pending(key) and not asyncio.run(rig.controller.verify(key))


def test_a_vm_not_settled_never_verifies(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body())
    assert not asyncio.run(rig.controller.verify(key_of(vm)))  # never reconciled
    rig.hosts["hv1"].connected = False
    rig.reconcile(vm)  # placed, but its host cannot be reached: not settled
    assert not asyncio.run(rig.controller.verify(key_of(vm)))


def test_a_vm_refused_at_admission_gets_our_finalizer_all_the_same(tmp_path: Path) -> None:
    """Its deletion comes through us whatever its spec asks: an earlier generation may have made something."""
    rig = Rig(tmp_path, ("hv1", True))
    vm = rig.add(vm_body(boot={"kernel": {"kernel": "/etc/shadow"}}))  # no Host serves it
    rig.reconcile(vm)
    assert ("finalizer", FINALIZER) in rig.journal
    assert rig.condition(vm, "Ready")["reason"] == "AccessDenied"

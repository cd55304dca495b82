"""A VM made from an Appliance: the spec it gets, the property values, the vApp start order (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.appliance import ApplianceStatus
from vdc.controllers.vm_appliance import (
    ApplianceMismatch,
    ApplianceWait,
    Sibling,
    appliance_status,
    base_volumes,
    property_values,
    spec_defaults,
    startup_wait,
)
from vdc.ovf.environment import environment_iso, environment_xml, read_environment, read_environment_iso

STATUS = ApplianceStatus.model_validate({
    "phase": "Ready",
    "virtualSystems": [
        {"id": "db", "cpus": 2, "memory": "256Mi", "firmware": "UEFI",
         "disks": [{"id": "vmdisk1", "volume": "appliance_ns_app_1_vmdisk1.qcow2", "bus": "ide"},
                   {"id": "scratch", "capacity": "1Gi", "bus": "scsi"}],
         "nics": [{"network": "VM Network", "model": "e1000"}]},
        {"id": "web", "cpus": 1, "memory": "128Mi",
         "disks": [{"id": "vmdisk2", "volume": "appliance_ns_app_1_vmdisk2.qcow2"}]},
    ],
    "properties": [
        {"key": "hostname", "default": "tiny", "userConfigurable": True},
        {"key": "port", "type": "uint16", "default": "5432", "userConfigurable": True},
        {"key": "debug", "type": "boolean", "userConfigurable": True},
        {"key": "build", "default": "42"},
    ],
    "startup": [{"id": "db", "order": 1, "startDelay": 10}, {"id": "web", "order": 2}],
    "hosts": ["hv1"],
})  # fmt: skip


def spec(**extra: Any) -> dict[str, Any]:
    return {"fromAppliance": {"name": "app", "networkMapping": {"VM Network": "lan"}}, **extra}


def test_what_the_spec_leaves_out_comes_from_the_appliance() -> None:
    patch = spec_defaults(spec(), STATUS, "pool")
    assert patch["cpu"] == {"count": 2} and patch["memory"] == {"size": "256Mi"} and patch["firmware"] == "UEFI"
    root, scratch, env = patch["disks"]
    assert root == {"name": "disk-vmdisk1", "bus": "sata", "bootOrder": 1,  # IDE: SATA on q35
                    "source": {"clone": {"pool": "pool", "appliance": {"name": "app", "disk": "vmdisk1"}}}}  # fmt: skip
    assert scratch == {"name": "disk-scratch", "bus": "scsi", "source": {"blank": {"pool": "pool", "size": "1Gi"}}}
    assert env == {"name": "ovf-env", "source": {"ovfEnv": {"pool": "pool"}}, "bus": "sata"}
    assert patch["interfaces"] == [{"name": "nic0", "switch": "lan", "model": "e1000"}]


def test_disks_of_a_shared_appliance_name_its_namespace() -> None:
    shared = spec(fromAppliance={"name": "app", "namespace": "catalog", "networkMapping": {"VM Network": "lan"}})
    root = spec_defaults(shared, STATUS, "pool")["disks"][0]
    assert root["source"]["clone"]["appliance"] == {"name": "app", "disk": "vmdisk1", "namespace": "catalog"}


def test_what_the_spec_says_wins_and_a_filled_in_spec_needs_nothing_more() -> None:
    given = spec(cpu={"count": 4}, memory={"size": "1Gi"}, firmware="BIOS", interfaces=[{"name": "x", "switch": "s"}])
    patch = spec_defaults(given, STATUS, "pool")
    assert set(patch) == {"disks"}
    assert spec_defaults({**given, **patch}, STATUS, "pool") == {}


def test_another_virtual_system_and_what_cannot_be_mapped() -> None:
    web = spec_defaults(spec(fromAppliance={"name": "app", "virtualSystem": "web"}), STATUS, "p")
    assert web["cpu"] == {"count": 1} and web["disks"][0]["source"]["clone"]["appliance"]["disk"] == "vmdisk2"
    with pytest.raises(ApplianceMismatch, match="'nope' is not in the appliance"):
        spec_defaults(spec(fromAppliance={"name": "app", "virtualSystem": "nope"}), STATUS, "p")
    with pytest.raises(ApplianceMismatch, match="map OVF network 'VM Network'"):
        spec_defaults({"fromAppliance": {"name": "app"}}, STATUS, "p")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"nope": "1"}, "no property 'nope'"),
        ({"build": "1"}, "'build' is not user-configurable"),
        ({"port": "http"}, "'port' is an integer"),
        ({"port": "-1"}, "unsigned"),
        ({"debug": "maybe"}, "'debug' is a boolean"),
    ],
)
def test_property_values_are_checked(given: dict[str, str], message: str) -> None:
    with pytest.raises(ApplianceMismatch, match=message):
        property_values(STATUS, given)


def test_property_values_are_the_defaults_with_the_vms_on_top_and_reach_the_iso() -> None:
    values = property_values(STATUS, {"hostname": "web-1", "debug": "true"})
    assert values == {"hostname": "web-1", "port": "5432", "debug": "true", "build": "42"}
    iso = environment_iso(environment_xml("db", values, {"Kind": "vdc-operator"}))
    assert read_environment(read_environment_iso(iso)) == values


def test_an_appliance_not_ready_is_waited_for_and_a_failed_one_is_not() -> None:
    with pytest.raises(ApplianceWait, match="does not exist"):
        appliance_status(None, "app")
    with pytest.raises(ApplianceWait, match="is Downloading"):
        appliance_status({"status": {"phase": "Downloading"}}, "app")
    with pytest.raises(ApplianceMismatch, match="failed to import: bad digest"):
        appliance_status({"status": {"phase": "Failed", "message": "bad digest"}}, "app")
    assert base_volumes(appliance_status({"status": STATUS.to_wire()}, "app")) == {
        None: "appliance_ns_app_1_vmdisk1.qcow2",
        "vmdisk1": "appliance_ns_app_1_vmdisk1.qcow2",
        "vmdisk2": "appliance_ns_app_1_vmdisk2.qcow2",
    }


def test_a_vapp_member_starts_after_the_ones_before_it_have_run_for_their_delay() -> None:
    boot = "2026-11-22T05:00:00Z"
    assert startup_wait(STATUS.startup, "db", [], {}) is None  # first in order
    assert "waiting for db" in (startup_wait(STATUS.startup, "web", [Sibling("db", "Starting", None)], {}) or "")
    assert "more after db started" in (
        startup_wait(STATUS.startup, "web", [Sibling("db", "Running", boot)], {boot: 4.0}) or ""
    )
    assert startup_wait(STATUS.startup, "web", [Sibling("db", "Running", boot)], {boot: 11.0}) is None
    assert startup_wait(STATUS.startup, "db", [Sibling("web", "Stopped", None)], {}) is None  # later ones don't matter


# --- stop order (appended for issue 13 item 3) ------------------------------------------------------

import asyncio  # noqa: E402
import time  # noqa: E402

from vdc.controllers.errors import DeletionWaits  # noqa: E402
from vdc.controllers.vm import VmController  # noqa: E402
from vdc.controllers.vm_appliance import StopBehaviour, StopSibling, stop_behaviour, stop_wait  # noqa: E402
from vdc.controllers.vm_plan import VmPlan  # noqa: E402
from vdc.controllers.vm_vapp import WAITING_FOR_STOP_ORDER, stop_ordered  # noqa: E402
from vdc.kube.cache import ObjectCache  # noqa: E402
from vdc.kube.client import StatusWritten  # noqa: E402
from vdc.libvirt.domains import DomainObservation  # noqa: E402

VAPP = ApplianceStatus.model_validate({
    "phase": "Ready",
    "virtualSystems": [{"id": "db"}, {"id": "app"}, {"id": "web"}],
    "startup": [
        {"id": "db", "order": 1},
        {"id": "app", "order": 2, "stopAction": "guestShutdown", "stopDelay": 20},
        {"id": "web", "order": 3, "stopAction": "guestShutdown"},
    ],
})  # fmt: skip


def test_a_vapp_member_stops_after_the_members_after_it_in_the_start_order() -> None:
    web_up, app_up = StopSibling("v-web", "web", True, False), StopSibling("v-app", "app", True, False)
    assert stop_wait(VAPP.startup, "web", [app_up, StopSibling("v-db", "db", True, False)]) is None  # last: first
    wait = stop_wait(VAPP.startup, "app", [web_up])
    assert wait is not None and wait.startswith("waiting for VM v-web (web, start order 3) to stop first")
    assert "reverse start order (app has order 2)" in wait
    assert "v-app (app, start order 2) and 1 more" in (stop_wait(VAPP.startup, "db", [web_up, app_up]) or "")
    assert stop_wait(VAPP.startup, "app", [StopSibling("v-web", "web", True, True)]) is None  # stopped
    kept = stop_wait(VAPP.startup, "app", [StopSibling("v-web", "web", False, False)])  # meant to keep running
    assert kept is not None and kept.endswith("it is not being stopped: stop or delete v-web too")
    assert "not being stopped" not in wait
    assert stop_wait(VAPP.startup, "app", [StopSibling("v-app2", "app", True, False)]) is None  # same order
    assert stop_wait(VAPP.startup, "other", [web_up]) is None  # not in the StartupSection


def test_stop_action_and_stop_delay() -> None:
    assert stop_behaviour(VAPP.startup, "db") == StopBehaviour(power_off=True, grace_seconds=0)  # the default
    assert stop_behaviour(VAPP.startup, "app") == StopBehaviour(power_off=False, grace_seconds=20)
    assert stop_behaviour(VAPP.startup, "web") == StopBehaviour(power_off=False, grace_seconds=None)  # VM's own
    startup = ApplianceStatus.model_validate({"startup": [{"id": "x", "stopAction": "none", "stopDelay": 5}]}).startup
    assert stop_behaviour(startup, "x") == StopBehaviour(power_off=False, grace_seconds=None)
    assert stop_behaviour(startup, "unknown") == StopBehaviour(power_off=False, grace_seconds=None)


def test_a_halted_member_is_held_back_or_forced_off_as_its_stop_action_says() -> None:
    stopping = VmPlan(("define", "shutdown"), "Stopping", False, "Stopping", "asking the guest to shut down")
    held = stop_ordered(stopping, ("waiting for VM v-web", StopBehaviour(False, None)))
    assert (held.actions, held.reason, held.message) == (("define",), WAITING_FOR_STOP_ORDER, "waiting for VM v-web")
    forced = stop_ordered(stopping, (None, StopBehaviour(True, 0)))
    assert forced.actions == ("define", "destroy") and "powerOff" in forced.message
    assert stop_ordered(stopping, (None, StopBehaviour(False, 20))) is stopping
    assert stop_ordered(stopping, None) is stopping
    stopped = VmPlan((), "Stopped", True, "Stopped", "stopped")
    assert stop_ordered(stopped, ("waiting", StopBehaviour(True, 0))) is stopped


def _member(name: str, system: str, *, strategy: str = "Always", phase: str = "Running", ns: str = "ns",
            deleting: bool = False, appliance: str = "vapp") -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}-{ns}", "generation": 1}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-03T10:00:00Z"
    spec = {"runStrategy": strategy, "fromAppliance": {"name": appliance, "virtualSystem": system}}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "host": "hv1"}}


class _Writer:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[str] = []

    async def patch_status(self, kind: Any, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        return status

    async def write_status(self, kind: Any, body: dict[str, Any], status: dict[str, Any]) -> StatusWritten:
        return StatusWritten(await self.patch_status(kind, body, status), None)

    async def event(self, kind: Any, body: dict[str, Any], reason: str, message: str, **_: Any) -> None:
        self.events.append(f"{reason}: {message}")

    async def add_finalizer(self, kind: Any, body: dict[str, Any], finalizer: str) -> dict[str, Any]:
        meta = body["metadata"]
        return {**body, "metadata": {**meta, "finalizers": [*(meta.get("finalizers") or []), finalizer]}}


class _Conn:
    connected = True

    def __init__(self, state: str) -> None:
        self.state = state
        self.shutdowns = 0

    async def call(self, fn: Any) -> Any:
        return fn(self)


def _controller(*bodies: dict[str, Any]) -> tuple[VmController, _Writer]:
    vms, appliances = ObjectCache(), ObjectCache()
    for body in bodies:
        vms.upsert(body)
    appliances.upsert({"metadata": {"name": "vapp", "namespace": "ns", "uid": "a"}, "spec": {},
                       "status": VAPP.to_wire()})  # fmt: skip
    writer = _Writer()
    controller = VmController(vms, ObjectCache(), None, writer, None, appliances=appliances)  # type: ignore[arg-type]
    return controller, writer


def test_the_controller_finds_the_siblings_stopping_with_a_member() -> None:
    db = _member("v-db", "db", strategy="Halted")
    others = [
        _member("v-web", "web", deleting=True),  # being deleted: stopping
        _member("v-app", "app", strategy="Halted", phase="Stopped"),  # stopped already
        _member("v-web2", "web", ns="elsewhere", strategy="Halted"),  # another namespace
        _member("v-web3", "web", strategy="Halted", appliance="other"),  # another appliance
    ]
    controller, _ = _controller(db, *others)
    stop = controller._stop_order(db)
    assert stop is not None and (stop[0] or "").startswith("waiting for VM v-web (web, start order 3)")
    assert stop[1] == StopBehaviour(power_off=True, grace_seconds=0)
    controller, _ = _controller(db, others[1], others[2], others[3])
    assert controller._stop_order(db) == (None, StopBehaviour(power_off=True, grace_seconds=0))
    controller, _ = _controller(db, _member("v-web", "web"))  # running on: it holds db up, and says so
    assert "stop or delete v-web too" in ((controller._stop_order(db) or ("", None))[0] or "")
    assert controller._stop_order({"metadata": {"namespace": "ns"}, "spec": {}}) is None  # not from an appliance


def test_deleting_a_member_waits_for_the_later_ones_and_gives_its_guest_the_stop_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vdc.controllers import vm as vm_module

    def observe(conn: _Conn, uid: str) -> DomainObservation:
        return DomainObservation(state=conn.state)  # type: ignore[arg-type]

    def shutdown(conn: _Conn, uid: str) -> None:
        conn.shutdowns += 1

    monkeypatch.setattr(vm_module.domains, "observe_domain", observe)
    monkeypatch.setattr(vm_module.domains, "shutdown", shutdown)
    app = _member("v-app", "app", deleting=True)
    conn = _Conn("running")
    controller, writer = _controller(app, _member("v-web", "web", deleting=True))
    controller.connections = {"hv1": conn}  # type: ignore[assignment]
    with pytest.raises(DeletionWaits, match="waiting for VM v-web"):
        asyncio.run(controller._stop_in_order(app, ["hv1"]))
    assert writer.statuses[-1]["phase"] == "Stopping" and conn.shutdowns == 0
    ready = next(c for c in writer.statuses[-1]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == WAITING_FOR_STOP_ORDER and "v-web" in ready["message"]

    controller, writer = _controller(app)  # v-web is gone: app stops, with its 20s stopDelay
    controller.connections = {"hv1": conn}  # type: ignore[assignment]
    with pytest.raises(DeletionWaits, match=r"guest to shut down .*0s of 20s, its vApp stopDelay"):
        asyncio.run(controller._stop_in_order(app, ["hv1"]))
    assert conn.shutdowns == 1  # ACPI shutdown asked once
    controller._shutdown_since[str(app["metadata"]["uid"])] = time.time() - 21
    asyncio.run(controller._stop_in_order(app, ["hv1"]))  # the delay is over: the domain may go
    assert conn.shutdowns == 1
    conn.state = "shutoff"
    controller._shutdown_since.clear()
    asyncio.run(controller._stop_in_order(app, ["hv1"]))  # off already: nothing to wait for
    db = _member("v-db", "db", deleting=True)
    controller, _ = _controller(db)  # powerOff: removed at once, no shutdown
    controller.connections = {"hv1": _Conn("running")}  # type: ignore[assignment]
    asyncio.run(controller._stop_in_order(db, ["hv1"]))

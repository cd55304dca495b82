"""One truth for addresses across crashes: the IPAM never hands out an address a VM holds, whether the
operator was SIGKILLed mid-rollout or the switch's status lost its allocations (an etcd backup
restored); an address two VMs hold is reported on the switch and the VM, and nobody is moved."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import Datacenter, wait_until

TEST_HOSTS = {"matchLabels": {"vdc.dev/driver": "test"}}


def _switch(name: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": name},
        "spec": {"mode": "isolated", "subnet": {"cidr": cidr}, "hostSelector": TEST_HOSTS},
    }  # fmt: skip


def _vm(dc: Datacenter, name: str, switch: str) -> dict[str, Any]:
    return dc.vm_manifest(name, memory={"size": "32Mi"}, hostSelector=TEST_HOSTS,
                          interfaces=[{"name": "eth0", "switch": switch}])  # fmt: skip


def _apply_all(dc: Datacenter, docs: list[dict[str, Any]]) -> None:
    dc.cp.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))  # fmt: skip


def _address(body: dict[str, Any]) -> str:
    return str(body["status"]["interfaces"][0]["ipAddresses"][0])


def _switch_ready(dc: Datacenter, name: str) -> dict[str, Any] | None:
    body = dc.get("virtualswitch", name)
    return body if (dc.condition(body, "Ready") or {}).get("status") == "True" else None


def _allocations(dc: Datacenter, switch: str) -> dict[str, str]:
    """owner VM name -> address, from the switch's status."""
    body = dc.get("virtualswitch", switch) or {}
    return {a["owner"].split("/")[1]: a["ip"] for a in (body.get("status") or {}).get("allocations", [])}


def _poke(dc: Datacenter, *names: str) -> None:
    """Make the restarted operator look at these VMs now rather than at its next resync."""
    dc.cp.kubectl("annotate", "vm", "-n", dc.namespace, *names, "--overwrite", f"e2e/poke={time.time()}")


def test_a_sigkill_right_after_new_vms_are_applied_never_doubles_an_address(datacenter: Datacenter) -> None:
    dc, switch = datacenter, "e2e-ipam-kill"
    dc.apply(_switch(switch, "10.125.0.0/24"))
    wait_until("switch Ready", lambda: _switch_ready(dc, switch), timeout=60)
    old = [f"ipam-kill-old-{i:02d}" for i in range(8)]
    _apply_all(dc, [_vm(dc, n, switch) for n in old])
    before = {n: _address(dc.wait_ready(n, timeout=180)) for n in old}
    # New VMs whose names sort first (they would take the lowest addresses), then the crash within a second.
    new = [f"ipam-kill-a{i:02d}" for i in range(12)]
    _apply_all(dc, [_vm(dc, n, switch) for n in new])
    time.sleep(0.5)
    dc.operator.kill()
    dc.operator.start()
    _poke(dc, *old, *new)
    after = {n: _address(dc.wait_ready(n, timeout=180)) for n in old + new}
    assert {n: after[n] for n in old} == before  # nobody moved
    assert len(set(after.values())) == len(after)  # nobody doubled
    assert _allocations(dc, switch) == after  # the switch's status is the same truth
    dc.cp.kubectl("delete", "vm", *old, *new, "-n", dc.namespace, "--timeout=120s")
    dc.cp.kubectl("delete", "virtualswitch", switch, "--timeout=60s")


def test_allocations_the_switch_status_lost_are_rebuilt_from_the_vms_before_anything_is_allocated(
    datacenter: Datacenter,
) -> None:
    dc, switch = datacenter, "e2e-ipam-lost"
    dc.apply(_switch(switch, "10.126.0.0/24"))
    wait_until("switch Ready", lambda: _switch_ready(dc, switch), timeout=60)
    old = [f"ipam-lost-old-{i}" for i in range(4)]
    _apply_all(dc, [_vm(dc, n, switch) for n in old])
    before = {n: _address(dc.wait_ready(n, timeout=180)) for n in old}
    dc.operator.stop()
    # As after an etcd restore from an older backup: the switch's allocations are gone, and a newcomer
    # whose name sorts first would get the lowest address of the range (an old VM's) if nothing remembered.
    dc.cp.kubectl("patch", "virtualswitch", switch, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"allocations": []}}))  # fmt: skip
    _apply_all(dc, [_vm(dc, "ipam-lost-a-new", switch)])
    dc.operator.start()
    _poke(dc, *old)
    after = {n: _address(dc.wait_ready(n, timeout=180)) for n in [*old, "ipam-lost-a-new"]}
    assert {n: after[n] for n in old} == before
    assert after["ipam-lost-a-new"] not in before.values()
    assert _allocations(dc, switch) == after
    dc.cp.kubectl("delete", "vm", *old, "ipam-lost-a-new", "-n", dc.namespace, "--timeout=120s")
    dc.cp.kubectl("delete", "virtualswitch", switch, "--timeout=60s")


def test_an_address_two_vms_hold_is_reported_on_the_switch_and_the_vm_and_nobody_moves(
    datacenter: Datacenter,
) -> None:
    dc, switch = datacenter, "e2e-ipam-conflict"
    dc.apply(_switch(switch, "10.127.0.0/24"))
    wait_until("switch Ready", lambda: _switch_ready(dc, switch), timeout=60)
    dc.apply(_vm(dc, "ipam-holder", switch))
    held = _address(dc.wait_ready("ipam-holder", timeout=120))
    dc.operator.stop()
    # The restored status gave the holder's address to another VM (created meanwhile) and forgot the holder.
    dc.apply(_vm(dc, "ipam-intruder", switch))
    uid = dc.get("vm", "ipam-intruder", dc.namespace)["metadata"]["uid"]  # type: ignore[index]
    from vdc.ipam import mac_for  # (the operator's own MAC rule: the intruder's allocation must match it)

    intruder = {"ip": held, "mac": mac_for(uid, "eth0"), "owner": f"{dc.namespace}/ipam-intruder/eth0"}
    dc.cp.kubectl("patch", "virtualswitch", switch, "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": {"allocations": [intruder]}}))  # fmt: skip
    dc.operator.start()
    _poke(dc, "ipam-holder")
    body = dc.wait_vm("ipam-holder", lambda b: (dc.condition(b, "Stalled") or {}).get("status") == "True", "Stalled")
    assert held in dc.condition(body, "Stalled")["message"] and "conflict" in dc.condition(body, "Stalled")["message"]
    assert _address(body) == held  # its status still shows what its guest holds: not moved
    conflict = wait_until(
        "the switch's AddressConflict condition",
        lambda: (c := dc.condition(dc.get("virtualswitch", switch), "AddressConflict")) and c["status"] == "True" and c,
        timeout=60,
    )
    assert "ipam-holder" in conflict["message"] and "ipam-intruder" in conflict["message"]
    events = dc.cp.kubectl("get", "events", "-n", "default", "--field-selector",
                           f"involvedObject.name={switch},reason=AddressConflict", "-o", "name")  # fmt: skip
    assert events.strip()
    assert _allocations(dc, switch)["ipam-intruder"] == held
    # Deleting one of the two ends the conflict; the other keeps the address it holds.
    dc.cp.kubectl("delete", "vm", "ipam-intruder", "-n", dc.namespace, "--timeout=60s")
    _poke(dc, "ipam-holder")
    assert _address(dc.wait_ready("ipam-holder", timeout=120)) == held
    wait_until(
        "the conflict cleared",
        lambda: (dc.condition(dc.get("virtualswitch", switch), "AddressConflict") or {}).get("status") == "False",
        timeout=60,
    )
    dc.cp.kubectl("delete", "vm", "ipam-holder", "-n", dc.namespace, "--timeout=60s")
    dc.cp.kubectl("delete", "virtualswitch", switch, "--timeout=60s")

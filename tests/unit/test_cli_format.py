"""Pure CLI formatting: tables, VM addresses, host capacity, progress, wait outcomes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from vdc.api.virtualmachine import restart_pending
from vdc.cli.format import (
    format_addresses,
    format_hosts,
    human_bytes,
    progress_line,
    rfc3339_now,
    table,
    vm_state_line,
    wait_outcome,
)


def test_table_aligns_columns_and_marks_empty_cells() -> None:
    out = table(("name", "ips"), [("eth0", "10.0.0.5"), ("backend-nic", None), ("x", "")])
    assert out.splitlines() == [
        "NAME          IPS",
        "eth0          10.0.0.5",
        "backend-nic   <none>",
        "x             <none>",
    ]


VM: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "team-a", "generation": 4},
    "status": {
        "host": "host-1",
        "interfaces": [
            {"name": "eth0", "macAddress": "52:54:00:aa:bb:01", "switch": "lan", "hostDevice": "vnet3",
             "ipAddresses": ["10.0.0.5", "10.0.0.77"]},
            {"name": "eth1", "macAddress": "52:54:00:aa:bb:02", "switch": "storage", "ipAddresses": ["10.9.0.2"]},
        ],
    },
}  # fmt: skip


def test_addresses_table_lists_each_nic_with_all_its_ips() -> None:
    assert format_addresses(VM, None).splitlines() == [
        "INTERFACE   MAC                 SWITCH    IPS",
        "eth0        52:54:00:aa:bb:01   lan       10.0.0.5,10.0.0.77",
        "eth1        52:54:00:aa:bb:02   storage   10.9.0.2",
    ]


def test_addresses_wide_adds_the_host_and_host_device() -> None:
    lines = format_addresses(VM, "wide").splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["INTERFACE", "MAC", "SWITCH", "HOST", "HOST DEVICE", "IPS"]
    assert lines[1].split() == ["eth0", "52:54:00:aa:bb:01", "lan", "host-1", "vnet3", "10.0.0.5,10.0.0.77"]
    assert lines[2].split() == ["eth1", "52:54:00:aa:bb:02", "storage", "host-1", "<none>", "10.9.0.2"]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_addresses_json_and_yaml_carry_the_same_data(output: str) -> None:
    text = format_addresses(VM, output)
    data = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert data == [
        {"name": "eth0", "macAddress": "52:54:00:aa:bb:01", "switch": "lan", "hostDevice": "vnet3",
         "ipAddresses": ["10.0.0.5", "10.0.0.77"]},
        {"name": "eth1", "macAddress": "52:54:00:aa:bb:02", "switch": "storage", "hostDevice": None,
         "ipAddresses": ["10.9.0.2"]},
    ]  # fmt: skip


def test_addresses_of_a_vm_without_nics_says_so() -> None:
    assert format_addresses({"metadata": {"name": "a", "namespace": "b"}}, None) == (
        "vm b/a has no interfaces in its status\n"
    )


def _host(name: str, ready: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"uri": f"qemu+ssh://{name}/system"},
        "status": {"conditions": [{"type": "Ready", "status": ready}], **status},
    }


HOSTS = [
    _host("b-host", "True", phase="Ready", allocatable={"cpus": 32, "memory": "64Gi"},
          allocated={"cpus": 6, "memory": "3584Mi"}, domains={"managed": 4, "running": 3},
          hostname="b.example", libvirtVersion="9.0.0"),
    _host("a-host", "False", phase="NotReady"),
]  # fmt: skip


def test_hosts_table_shows_capacity_sorted_by_name() -> None:
    lines = format_hosts(HOSTS, None).splitlines()
    assert [line.split("   ")[0].strip() for line in lines] == ["NAME", "a-host", "b-host"]
    assert lines[2].split() == ["b-host", "True", "Ready", "6/32", "3.5Gi/64.0Gi", "3/4"]
    assert lines[1].split() == ["a-host", "False", "NotReady", "0/?", "0.0Gi/?", "0/0"]


def test_hosts_wide_and_json() -> None:
    wide = format_hosts(HOSTS, "wide").splitlines()
    assert wide[2].split()[-3:] == ["b.example", "9.0.0", "qemu+ssh://b-host/system"]
    data = json.loads(format_hosts(HOSTS, "json"))
    assert data[1] == {"name": "b-host", "ready": "True", "phase": "Ready", "cpus": "6/32",
                       "memory": "3.5Gi/64.0Gi", "vms": "3/4"}  # fmt: skip
    assert format_hosts([], None) == "no hosts\n"


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 << 20, "5.0 MiB"), (3 << 40, "3072.0 GiB")]
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_progress_line() -> None:
    assert progress_line("upload a.ova", 12 << 20, 48 << 20) == "upload a.ova: 12.0 MiB / 48.0 MiB (25%)"
    assert progress_line("download d", 3 << 20, None) == "download d: 3.0 MiB"


def test_rfc3339_now_is_utc_with_milliseconds_and_orders_after_a_boot_in_the_same_second() -> None:
    when = datetime(2025, 3, 1, 12, 0, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339_now(when) == "2025-03-01T10:00:05.678Z"
    assert restart_pending(rfc3339_now(when), "2025-03-01T10:00:05Z")
    assert rfc3339_now().endswith("Z") and datetime.fromisoformat(rfc3339_now()).tzinfo == UTC


def _vm(phase: str, ready: str, *, generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "a", "generation": generation},
        "status": {
            "phase": phase,
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": ready, "message": f"{phase} message"}],
            **status,
        },
    }


@pytest.mark.parametrize(
    ("action", "vm", "outcome"),
    [
        ("stop", _vm("Stopped", "True"), "done"),
        ("stop", _vm("Stopping", "False"), None),
        ("stop", _vm("Stopped", "True", generation=3), None),  # stopped already, the spec change not seen yet
        ("start", _vm("Running", "True"), "done"),
        ("start", _vm("Starting", "False"), None),
        ("start", _vm("Stopped", "True"), None),
        ("start", _vm("Running", "True", generation=3), None),  # running already, the spec change not seen yet
        ("restart", _vm("Running", "True", bootTime="2025-03-01T10:00:00Z"), None),  # not restarted yet
        ("restart", _vm("Running", "True", bootTime="2025-03-01T10:00:09Z"), "done"),
        ("restart", _vm("Stopping", "False", bootTime="2025-03-01T10:00:00Z"), None),
    ],
)
def test_wait_outcome(action: str, vm: dict[str, Any], outcome: str | None) -> None:
    assert wait_outcome(action, vm, "2025-03-01T10:00:03.500Z") == outcome


def test_wait_outcome_reports_a_stalled_vm() -> None:
    vm = _vm("Failed", "False")
    vm["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "UnsupportedSpec", "message": "no such pool"}
    )
    assert wait_outcome("start", vm) == "stalled: UnsupportedSpec: no such pool"


def test_vm_state_line() -> None:
    assert vm_state_line(_vm("Stopping", "False")) == "phase Stopping, Ready=False: Stopping message"
    assert vm_state_line({"metadata": {}}) == "phase unknown, Ready=Unknown"

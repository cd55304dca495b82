"""Pure formatting for the CLI: tables, addresses, host capacity, progress, wait lines. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from vdc.api.quantity import to_bytes
from vdc.api.virtualmachine import restart_pending

NONE = "<none>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned as kubectl prints them (upper-case headers, three spaces apart)."""
    cells = [[str(h).upper() for h in headers]] + [[NONE if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def condition(body: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


# --- addresses -----------------------------------------------------------------------------------


def vm_addresses(vm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each NIC of the VM as its status reports it: name, MAC, switch, host device, IPs."""
    out = []
    for nic in (vm.get("status") or {}).get("interfaces") or []:
        out.append({
            "name": nic.get("name"),
            "macAddress": nic.get("macAddress"),
            "switch": nic.get("switch"),
            "hostDevice": nic.get("hostDevice"),
            "ipAddresses": list(nic.get("ipAddresses") or []),
        })  # fmt: skip
    return out


def format_addresses(vm: Mapping[str, Any], output: str | None) -> str:
    """``output``: None (table), "wide" (adds the host and host device), "json" or "yaml"."""
    nics = vm_addresses(vm)
    if output == "json":
        return json.dumps(nics, indent=2) + "\n"
    if output == "yaml":
        return str(yaml.safe_dump(nics, sort_keys=False))
    if not nics:
        meta = vm["metadata"]
        return f"vm {meta.get('namespace')}/{meta.get('name')} has no interfaces in its status\n"
    if output == "wide":
        host = (vm.get("status") or {}).get("host")
        return table(
            ("interface", "mac", "switch", "host", "host device", "ips"),
            [
                (n["name"], n["macAddress"], n["switch"], host, n["hostDevice"], ",".join(n["ipAddresses"]))
                for n in nics
            ],
        )
    return table(
        ("interface", "mac", "switch", "ips"),
        [(n["name"], n["macAddress"], n["switch"], ",".join(n["ipAddresses"])) for n in nics],
    )


# --- hosts ---------------------------------------------------------------------------------------


def _gib(quantity: object) -> str:
    if quantity is None:
        return "?"
    return f"{to_bytes(str(quantity)) / 2**30:.1f}Gi"


def host_row(host: Mapping[str, Any], *, wide: bool = False) -> list[object]:
    status = host.get("status") or {}
    ready = (condition(host, "Ready") or {}).get("status", "Unknown")
    allocated, allocatable = status.get("allocated") or {}, status.get("allocatable") or {}
    domains = status.get("domains") or {}
    row: list[object] = [
        host["metadata"]["name"],
        ready,
        status.get("phase"),
        f"{allocated.get('cpus', 0)}/{allocatable.get('cpus', '?')}",
        f"{_gib(allocated.get('memory', '0'))}/{_gib(allocatable.get('memory'))}",
        f"{domains.get('running', 0)}/{domains.get('managed', 0)}",
    ]
    if wide:
        row += [status.get("hostname"), status.get("libvirtVersion"), (host.get("spec") or {}).get("uri")]
    return row


HOST_HEADERS = ("name", "ready", "phase", "cpus (alloc/allocatable)", "memory (alloc/allocatable)", "vms (run/all)")


def format_hosts(hosts: Sequence[Mapping[str, Any]], output: str | None) -> str:
    """The capacity table of Hosts (from status only); json/yaml give the same figures as objects."""
    ordered = sorted(hosts, key=lambda h: str(h["metadata"]["name"]))
    if output in ("json", "yaml"):
        keys = ("name", "ready", "phase", "cpus", "memory", "vms")
        data = [dict(zip(keys, host_row(h), strict=True)) for h in ordered]
        return json.dumps(data, indent=2) + "\n" if output == "json" else str(yaml.safe_dump(data, sort_keys=False))
    wide = output == "wide"
    headers = HOST_HEADERS + (("hostname", "libvirt", "uri") if wide else ())
    if not ordered:
        return "no hosts\n"
    return table(headers, [host_row(h, wide=wide) for h in ordered])


# --- progress and waiting ------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def progress_line(what: str, done: int, total: int | None) -> str:
    """``upload disk.ova: 12.0 MiB / 48.0 MiB (25%)``; without a total, just the bytes."""
    if total:
        return f"{what}: {human_bytes(done)} / {human_bytes(total)} ({100 * done // total}%)"
    return f"{what}: {human_bytes(done)}"


def rfc3339_now(now: datetime | None = None) -> str:
    """The time in RFC 3339, UTC, with milliseconds (a request sent within the second a VM booted counts)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def vm_state_line(vm: Mapping[str, Any]) -> str:
    """``phase Stopping, Ready=False: restart requested: asking the guest to shut down``."""
    status = vm.get("status") or {}
    ready = condition(vm, "Ready") or {}
    line = f"phase {status.get('phase') or 'unknown'}, Ready={ready.get('status', 'Unknown')}"
    return f"{line}: {ready['message']}" if ready.get("message") else line


def wait_outcome(action: str, vm: Mapping[str, Any], requested_at: str | None = None) -> str | None:
    """ "done" when ``action`` (start, stop, restart) has taken effect, "stalled: …" when the VM cannot
    get there without a fix, else None (keep waiting)."""
    meta, status = vm.get("metadata") or {}, vm.get("status") or {}
    stalled = condition(vm, "Stalled") or {}
    if stalled.get("status") == "True":
        return f"stalled: {stalled.get('reason')}: {stalled.get('message')}"
    current = status.get("observedGeneration") == meta.get("generation")
    ready = (condition(vm, "Ready") or {}).get("status") == "True"
    phase = status.get("phase")
    if not (current and ready):
        return None
    if action == "stop":
        return "done" if phase == "Stopped" else None
    if phase != "Running":
        return None
    if action == "restart" and restart_pending(requested_at, status.get("bootTime")):
        return None
    return "done"

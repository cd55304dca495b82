"""A two-VM vApp stops in reverse StartupSection order, on real hosts: when both are halted at once and
when both are deleted at once, the later member (web, order 2) is off (or gone) in libvirt before the
earlier one (db, order 1), which says why it waits (WaitingForStopOrder).

The vApp is ``build_vapp``'s: db (order 1, stopAction powerOff by default) and web (order 2, stopAction
guestShutdown, stopDelay 0: the VM's own grace period, 3 s here). Libvirt is watched from the side
(``virsh domstate`` every fraction of a second) to time when each domain went off or away.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from test_appliances import _appliance, _kubectl, _publish, _ready, _vm, site  # noqa: F401  (site: a fixture)

from appliances import build_vapp
from conftest import Datacenter, wait_until
from httpserve import FileServer

APPLIANCE = "vapp-stop"
DB, WEB = "stop-db", "stop-web"


class DomainWatch:
    """Polls ``virsh domstate`` of some domains in a thread; remembers when each was first seen off
    (not running) and first seen gone (undefined)."""

    def __init__(self, dc: Datacenter, domains: dict[str, tuple[str, str]]) -> None:
        self.dc, self.domains = dc, domains  # VM name -> (host, domain name)
        self.off: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.seen: dict[str, list[str]] = {name: [] for name in domains}
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for name, (host, domain) in self.domains.items():
                result = subprocess.run(
                    ["virsh", "-c", self.dc.host(host).qemu_uri, "domstate", domain],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                now = time.monotonic()
                state = result.stdout.strip() if result.returncode == 0 else "gone"
                if not self.seen[name] or self.seen[name][-1] != state:
                    self.seen[name].append(state)
                if state != "running":
                    self.off.setdefault(name, now)
                if state == "gone":
                    self.gone.setdefault(name, now)
            self._stop.wait(0.2)

    @contextmanager
    def running(self) -> Iterator[DomainWatch]:
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=60)


def _placement(dc: Datacenter, name: str) -> tuple[str, str]:
    body = dc.vm(name) or {}
    return body["status"]["host"], body["status"]["domainName"]


def _patch(dc: Datacenter, name: str, strategy: str) -> None:
    subprocess.run([*_kubectl(dc), "patch", "vm", name, "-n", dc.namespace, "--type", "merge",
                    "-p", f'{{"spec": {{"runStrategy": "{strategy}"}}}}'], check=True, capture_output=True)  # fmt: skip


def _events(dc: Datacenter, name: str) -> str:
    return dc.cp.kubectl("get", "events", "-n", dc.namespace, "--field-selector", f"involvedObject.name={name}",
                         "-o", "custom-columns=REASON:.reason,MESSAGE:.message")  # fmt: skip


def _stopped(dc: Datacenter, name: str) -> dict | None:
    body = dc.vm(name)
    ok = body and body.get("status", {}).get("phase") == "Stopped"
    return body if ok and (dc.condition(body, "Ready") or {}).get("status") == "True" else None


def test_a_vapp_stops_and_is_deleted_in_reverse_start_order(datacenter: Datacenter, site: FileServer) -> None:  # noqa: F811
    dc = datacenter
    built = build_vapp(start_delay=8)
    _appliance(dc, APPLIANCE, _publish(site, built.path, f"{APPLIANCE}.ova"))
    appliance = wait_until("the vApp Ready", lambda: _ready(dc, "appliance", APPLIANCE, dc.namespace), timeout=300)
    startup = {s["id"]: s for s in appliance["status"]["startup"]}
    assert (startup["db"]["order"], startup["db"]["stopAction"]) == (1, "powerOff")
    assert (startup["web"]["order"], startup["web"]["stopAction"]) == (2, "guestShutdown")
    _vm(dc, DB, APPLIANCE, virtualSystem="db")
    _vm(dc, WEB, APPLIANCE, virtualSystem="web")
    dc.wait_ready(DB, timeout=300)
    dc.wait_ready(WEB, timeout=300)

    # (1) Both halted at once, the earlier member first: web (order 2) must be off before db goes off.
    watch = DomainWatch(dc, {DB: _placement(dc, DB), WEB: _placement(dc, WEB)})
    with watch.running():
        _patch(dc, DB, "Halted")
        _patch(dc, WEB, "Halted")
        wait_until("both vApp members Stopped", lambda: _stopped(dc, DB) and _stopped(dc, WEB), timeout=180)
        time.sleep(0.5)
    assert set(watch.off) == {DB, WEB}, watch.seen
    assert watch.off[WEB] < watch.off[DB], (watch.off, watch.seen)
    assert "WaitingForStopOrder" in _events(dc, DB)
    assert f"waiting for VM {WEB} (web, start order 2)" in _events(dc, DB)

    # Both running again (the start order applies: db, then web after db's startDelay).
    _patch(dc, WEB, "Always")
    _patch(dc, DB, "Always")
    dc.wait_ready(DB, timeout=300)
    dc.wait_ready(WEB, timeout=300)

    # (2) Both deleted at once, the earlier member listed first: web's domain must go before db's.
    watch = DomainWatch(dc, {DB: _placement(dc, DB), WEB: _placement(dc, WEB)})
    with watch.running():
        subprocess.run([*_kubectl(dc), "delete", "vm", DB, WEB, "-n", dc.namespace, "--wait=false"], check=True)
        wait_until("both vApp members deleted", lambda: dc.vm(DB) is None and dc.vm(WEB) is None, timeout=180)
        time.sleep(0.5)
    assert set(watch.gone) == {DB, WEB}, watch.seen
    assert watch.gone[WEB] < watch.gone[DB], (watch.gone, watch.seen)
    assert watch.off[WEB] <= watch.off[DB], (watch.off, watch.seen)

    dc.cp.kubectl("delete", "appliance", APPLIANCE, "-n", dc.namespace, "--timeout=60s")

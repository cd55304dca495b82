"""A Redfish endpoint (sushy-tools' emulator) whose ComputerSystems are the rig's libvirt hosts.

Usage: .venv/bin/python hack/redfish-rig.py --port PORT [--listen 127.0.0.1] [--htpasswd FILE]
                                             [--tls-cert FILE --tls-key FILE]
(hack/libvirt-hosts.sh `redfish up PORT` starts it in the background; `redfish down` and `down` stop it.)

One ComputerSystem per host of $VDC_STATE/hosts/hosts.txt (every host listed there since the emulator
started), its Id the host name, its UUID the host's host_uuid. PowerState is On while the host's libvirtd
(hosts/<name>/pids) is alive, PoweringOn while a power-on runs, Off otherwise. ComputerSystem.Reset:
  ForceOff, GracefulShutdown  SIGKILL every process in the host's mount namespace (libvirtd, virtlogd,
                              its QEMUs), as losing power would; returns once they are gone
  On, ForceOn                 `hack/libvirt-hosts.sh up N` (N: the highest host index known) in the
                              background, with this VDC_STATE and VDC_HOST_PREFIX: running hosts are
                              left alone, so only the dead one starts; 204 at once, PoweringOn meanwhile
  ForceRestart, GracefulRestart  off, then on
The driver plugs into sushy-tools' Flask application by overriding its `systems` property (a subclass);
everything else (service root, managers, chassis, basic auth from an htpasswd file, TLS) is sushy-tools'.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sushy_tools import error
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver

HACK = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has lost its power already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not re.search(r"^State:\s*Z", status, re.M)


class RigHostsDriver(AbstractSystemsDriver):  # type: ignore[misc]
    """sushy-tools systems driver: the rig's libvirt hosts of one VDC_STATE."""

    def __init__(self, state: Path, prefix: str) -> None:
        self._hosts_dir = state / "hosts"
        self._prefix = prefix
        self._known: dict[str, int] = {}  # name -> index, every host seen in hosts.txt
        self._lock = threading.Lock()  # one power action at a time (hack/libvirt-hosts.sh locks the state too)
        self._powering_on: set[str] = set()

    # -- identity --------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            lines = (self._hosts_dir / "hosts.txt").read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            name = line.split()[0] if line.split() else ""
            m = re.fullmatch(re.escape(self._prefix) + r"-([0-9]+)", name)
            if m:
                self._known[name] = int(m.group(1))

    def _uuid_of(self, name: str) -> str:
        try:
            return (self._hosts_dir / name / "host_uuid").read_text().strip()
        except FileNotFoundError:
            return name

    def _resolve(self, identity: str) -> str:
        """The host name for a system Id (host name) or UUID (sushy-tools' managers use the UUID)."""
        self._refresh()
        if identity in self._known:
            return identity
        for name in self._known:
            if self._uuid_of(name) == identity:
                return name
        raise error.NotFound(f"no rig host {identity}")

    @property
    def driver(self) -> str:
        return "<vdc-rig-hosts>"

    @property
    def systems(self) -> list[str]:
        self._refresh()
        return sorted(self._known, key=lambda n: self._known[n])

    def uuid(self, identity: str) -> str:
        return self._uuid_of(self._resolve(identity))

    def name(self, identity: str) -> str:
        return self._resolve(identity)

    # -- power -----------------------------------------------------------------
    def _pids(self, name: str) -> dict[str, int]:
        try:
            text = (self._hosts_dir / name / "pids").read_text()
        except FileNotFoundError:
            return {}
        return {p[0]: int(p[1]) for p in (line.split() for line in text.splitlines()) if len(p) >= 2}

    def _libvirtd(self, name: str) -> int | None:
        pid = self._pids(name).get("libvirtd")
        return pid if pid is not None and _alive(pid) else None

    def get_power_state(self, identity: str) -> str:
        name = self._resolve(identity)
        if name in self._powering_on:
            return "PoweringOn"
        return "On" if self._libvirtd(name) else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        name = self._resolve(identity)
        if state in ("ForceOff", "GracefulShutdown"):
            with self._lock:
                self._power_off(name)
        elif state in ("On", "ForceOn"):
            self._power_on(name)
        elif state in ("ForceRestart", "GracefulRestart"):
            with self._lock:
                self._power_off(name)
            self._power_on(name)
        else:
            raise error.NotSupportedError(f"reset type {state} is not supported by the rig")

    def _power_off(self, name: str) -> None:
        libvirtd = self._libvirtd(name)
        if libvirtd is None:
            self._logger.info("%s: already off", name)
            return
        namespace = os.readlink(f"/proc/{libvirtd}/ns/mnt")
        if namespace == os.readlink("/proc/self/ns/mnt"):
            raise error.FishyError(f"{name}: its libvirtd shares this emulator's mount namespace; refusing")
        doomed: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
                    doomed.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + 15
        while (left := [p for p in doomed if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise error.FishyError(f"{name}: processes {left} survived SIGKILL")
        self._logger.info("%s: powered off (killed %s)", name, doomed)

    def _power_on(self, name: str) -> None:
        with self._lock:
            if name in self._powering_on or self._libvirtd(name):
                return
            self._powering_on.add(name)
        threading.Thread(target=self._run_up, args=(name,), daemon=True).start()

    def _run_up(self, name: str) -> None:
        try:
            with self._lock:
                count = max(self._known.values())
                self._logger.info("%s: powering on (libvirt-hosts.sh up %d)", name, count)
                env = {**os.environ, "VDC_STATE": str(self._hosts_dir.parent), "VDC_HOST_PREFIX": self._prefix}
                result = subprocess.run(
                    [str(HACK / "libvirt-hosts.sh"), "up", str(count)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # hosts.txt; the log (stderr) goes to this emulator's log
                    check=False,
                )
                if result.returncode != 0:
                    self._logger.error("%s: power-on failed: libvirt-hosts.sh up exited %d", name, result.returncode)
        finally:
            self._powering_on.discard(name)

    def get_boot_device(self, identity: str) -> str:
        self._resolve(identity)
        return "Hdd"

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        raise error.NotSupportedError("the rig's hosts have no boot device to set")


class RigApplication(emulator.Application):  # type: ignore[misc]
    """sushy-tools' application with our systems driver instead of the one its configuration selects."""

    rig_driver: RigHostsDriver

    @property
    def systems(self) -> RigHostsDriver:
        return self.rig_driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--state", default=os.environ.get("VDC_STATE", str(HACK.parent / ".vdc")))
    parser.add_argument("--prefix", default=os.environ.get("VDC_HOST_PREFIX", "vdc-host"))
    parser.add_argument("--htpasswd", help="basic auth users (htpasswd file, bcrypt); default: no auth")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    app: Any = emulator.app
    app.__class__ = RigApplication  # the routes are registered on this instance
    config: dict[str, Any] = {"SUSHY_EMULATOR_LISTEN_IP": args.listen, "SUSHY_EMULATOR_LISTEN_PORT": args.port}
    if args.htpasswd:
        config["SUSHY_EMULATOR_AUTH_FILE"] = args.htpasswd
    app.configure(extra_config=config)
    RigHostsDriver.initialize(app.config, app.logger)
    app.rig_driver = RigHostsDriver(Path(args.state).resolve(), args.prefix)
    app.logger.setLevel(logging.INFO)

    ssl_context = None
    if args.tls_cert and args.tls_key:
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.run(host=args.listen, port=args.port, ssl_context=ssl_context, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``vdc console`` (the guest's serial console through a libvirt stream) and ``vdc vnc`` (its VNC endpoint,
and a local port forwarded to it through ``virDomainOpenGraphicsFD``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sys
import termios
import threading
import time
import tty
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import defusedxml.ElementTree as DET
import libvirt

from vdc.cli.context import (
    CliError,
    Kube,
    add_common_options,
    libvirt_error,
    port,
    positive_seconds,
    vm_domain,
    vm_host,
)

ESCAPE = b"\x1d"  # Ctrl-], as virsh
IDLE_AFTER_EOF = 1.0
"""Seconds of guest silence after stdin's EOF before a non-interactive console ends."""
CHUNK = 64 * 1024

_event_loop_started = False


def _start_event_loop() -> None:
    """libvirt's default event loop in a daemon thread (stream callbacks need one); before any open."""
    global _event_loop_started
    if _event_loop_started:
        return
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _event_loop_started = True


# --- domain XML facts ----------------------------------------------------------------------------


def has_console(domain_xml: str) -> bool:
    devices = DET.fromstring(domain_xml).find("devices")
    return devices is not None and (devices.find("console") is not None or devices.find("serial") is not None)


def vnc_graphics(domain_xml: str) -> tuple[str | None, int | None] | None:
    """(listen address, port) of the domain's VNC display; None when it has none. The port is None
    while the domain is off (libvirt shows -1 until QEMU picked one)."""
    devices = DET.fromstring(domain_xml).find("devices")
    graphics: ET.Element | None = None
    if devices is not None:
        graphics = next((g for g in devices.findall("graphics") if g.get("type") == "vnc"), None)
    if graphics is None:
        return None
    listen = next((li.get("address") for li in graphics.findall("listen") if li.get("type") == "address"), None)
    port = int(graphics.get("port") or -1)
    return listen or graphics.get("listen"), port if port > 0 else None


def vnc_endpoint(uri: str, hostname: str | None, listen: str | None, port: int) -> tuple[str, str | None]:
    """The ``address:port`` to point a VNC viewer at, and a note when it is only reachable on the host
    itself (VNC listening on loopback of a remote host: use ``--forward``)."""
    remote = urlsplit(uri).hostname
    wildcard = listen in (None, "", "0.0.0.0", "::")
    loopback = listen is not None and (listen.startswith("127.") or listen == "::1")
    address = (remote or hostname or "127.0.0.1") if wildcard else str(listen)
    note = None
    if loopback and remote not in (None, "localhost") and not str(remote).startswith("127."):
        note = f"VNC listens on loopback of host {remote}: reach it with --forward"
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}", note


# --- console -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead (TCSAFLUSH would drop it)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class ConsoleSession:
    """Copies guest output to ``out_fd`` (from libvirt's event thread) and ``in_fd`` to the guest."""

    def __init__(self, stream: libvirt.virStream, in_fd: int, out_fd: int) -> None:
        self.stream = stream
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.closed = threading.Event()
        self.last_output = time.monotonic()
        self.error: str | None = None

    def on_event(self, stream: libvirt.virStream, events: int, _opaque: Any) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(CHUNK)
                except libvirt.libvirtError as exc:
                    self.error = str(exc)
                    self.closed.set()
                    return
                if data == -2:
                    break  # nothing more for now
                if not data:
                    self.closed.set()
                    return
                assert isinstance(data, bytes)
                self.last_output = time.monotonic()
                os.write(self.out_fd, data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.closed.set()

    def send(self, data: bytes) -> None:
        while data and not self.closed.is_set():
            sent = self.stream.send(data)
            if sent == -2:
                time.sleep(0.01)
                continue
            if sent < 0:
                raise CliError("the console stream refused data")
            data = data[sent:]

    def run(self, timeout: float | None) -> str:
        """Until the escape key, stdin's EOF (and the guest quiet), the stream's end or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stdin_open = True
        while not self.closed.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "timeout"
            if not stdin_open and now - self.last_output >= IDLE_AFTER_EOF:
                return "eof"
            if not stdin_open:
                self.closed.wait(0.05)
                continue
            ready, _, _ = select.select([self.in_fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self.in_fd, 4096)
            if not data:
                stdin_open = False
                self.last_output = time.monotonic()
                continue
            if ESCAPE in data:
                self.send(data.split(ESCAPE, 1)[0])
                return "escape"
            self.send(data)
        return "closed"


def cmd_console(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    vm = kube.vm(args.vm)
    label = f"{kube.namespace}/{args.vm}"
    host = vm_host(vm)
    _start_event_loop()
    with vm_domain(kube, vm) as (conn, dom):
        try:
            if not has_console(dom.XMLDesc(0)):
                raise CliError(f"vm {label} has no serial console (spec.console.serial is false)")
            if not dom.isActive():
                raise CliError(f"vm {label} is not running: no console (`vdc start {args.vm}`)")
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if args.force else 0
            dom.openConsole(None, stream, flags)
        except libvirt.libvirtError as exc:
            if "active console session" in str(exc).lower():
                raise CliError(f"vm {label}: another console session is open (use --force to take it over)") from exc
            raise libvirt_error(host, exc) from exc
        in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
        session = ConsoleSession(stream, in_fd, out_fd)
        stream.eventAddCallback(
            libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP,
            session.on_event,
            None,
        )
        interactive = os.isatty(in_fd)
        try:
            with _raw_terminal(in_fd) if interactive else contextlib.nullcontext():
                if interactive:  # after raw mode is on: nothing typed from now on is echoed or lost locally
                    print(f"Connected to {label} on host {host}\r\nEscape character is ^] (Ctrl-])\r", file=sys.stderr)
                outcome = session.run(args.timeout)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        if interactive:
            print("\r", file=sys.stderr)
        if session.error:
            raise CliError(f"vm {label}: console stream failed: {session.error}")
        if outcome == "closed":
            print(f"console of {label} closed by the host (the guest stopped?)", file=sys.stderr)
    return 0  # a --timeout asked for by the caller is not an error


# --- vnc -----------------------------------------------------------------------------------------


def _proxy(a: socket.socket, b: socket.socket) -> None:
    pair = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(pair), [], [])
        for sock in ready:
            data = sock.recv(CHUNK)
            if not data:
                return
            pair[sock].sendall(data)


def cmd_vnc(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    vm = kube.vm(args.vm)
    label = f"{kube.namespace}/{args.vm}"
    host_name = vm_host(vm)
    host = kube.host(host_name)
    with vm_domain(kube, vm, host) as (_conn, dom):
        try:
            graphics = vnc_graphics(dom.XMLDesc(0))
            active = bool(dom.isActive())
        except libvirt.libvirtError as exc:
            raise libvirt_error(host_name, exc) from exc
        if graphics is None:
            raise CliError(f"vm {label} has no VNC graphics (set spec.graphics.type: VNC)")
        listen, port = graphics
        if not active or port is None:
            raise CliError(f"vm {label} is not running: no VNC display")
        endpoint, note = vnc_endpoint(
            str(host["spec"]["uri"]), (host.get("status") or {}).get("hostname"), listen, port
        )
        if args.forward is None:
            print(f"vnc://{endpoint}")
            if note:
                print(note, file=sys.stderr)
            return 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                server.bind((args.address, args.forward))
            except OSError as exc:
                raise CliError(f"cannot listen on {args.address}:{args.forward}: {exc.strerror}") from exc
            server.listen(1)
            local = server.getsockname()
            print(f"vnc://{local[0]}:{local[1]}", flush=True)
            print(f"forwarding {local[0]}:{local[1]} to the VNC display of {label} on host {host_name} "
                  "(one connection at a time; Ctrl-C stops)", file=sys.stderr, flush=True)  # fmt: skip
            while True:
                client, _peer = server.accept()
                with client:
                    try:
                        fd = dom.openGraphicsFD(0, 0)
                    except libvirt.libvirtError as exc:
                        raise CliError(
                            f"host {host_name}: cannot open the VNC display through libvirt ({exc}); "
                            "that needs a local (unix socket) connection to the host"
                        ) from exc
                    with socket.socket(fileno=fd) as display:
                        _proxy(client, display)
                if args.once:
                    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="the guest's serial console (Ctrl-] quits)",
        description="Attach to the VM's serial console through libvirt on its host. On a terminal it is "
        "interactive (raw mode; Ctrl-] quits, as in virsh). Otherwise stdin is sent to the guest and its "
        "output copied to stdout until Ctrl-] in the input, the console closing, --timeout, or stdin's end "
        f"followed by {IDLE_AFTER_EOF:g}s without guest output.",
    )
    p.add_argument("vm", help="VirtualMachine name")
    add_common_options(p)
    p.add_argument("--force", action="store_true", help="take the console over from another session")
    p.add_argument("--timeout", type=positive_seconds, default=None, help="disconnect after this many seconds")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser(
        "vnc",
        help="a VM's VNC endpoint, or a local port forwarded to it",
        description="Print vnc://ADDRESS:PORT of the VM's VNC display (from the live domain on its host). "
        "With --forward LOCALPORT, listen on that local port and proxy each connection, one at a time, to "
        "the display through libvirt (virDomainOpenGraphicsFD: needs a unix-socket connection to the host).",
    )
    p.add_argument("vm", help="VirtualMachine name")
    add_common_options(p)
    p.add_argument("--forward", type=port, default=None, metavar="LOCALPORT", help="forward this local port (0: any)")
    p.add_argument("--address", default="127.0.0.1", help="local address to listen on (default: %(default)s)")
    p.add_argument("--once", action="store_true", help="with --forward: stop after the first connection ends")
    p.set_defaults(func=cmd_vnc)

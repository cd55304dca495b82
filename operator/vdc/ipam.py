"""IPAM of a distributed VirtualSwitch: one IPv4 address space per switch, across all hosts.

Pure functions, no I/O. The allocations live in the switch's ``status.allocations`` so that they
survive operator restarts; the controller feeds them back in as ``current`` on every reconcile and
writes ``Result.allocations`` back. :func:`allocate` is deterministic (independent of the order of
its inputs) and idempotent (feeding its own output back changes nothing).

Rules, in the order they are applied:

1. Each request on its own: its MAC must be a valid unicast MAC; a fixed IP must be inside the subnet
   and not the network, broadcast or gateway address (it may be outside the DHCP range).
2. Stability: an owner keeps its current address if it is still valid: a usable address of the
   subnet and either equal to its fixed IP or, without a fixed IP, inside the DHCP range (so
   shrinking the range or dropping a fixed IP moves the owner into the range).
3. MACs: no two owners may share one. The owner keeping (rule 2) an address bound to that MAC wins,
   else the lexicographically smaller owner; the others get an error.
4. Fixed IPs not kept by rule 2: not taken by another owner (an owner keeping its address wins); of
   several new claims on one address the lexicographically smaller owner wins.
5. Dynamic: the remaining owners, in owner order, get the lowest free address of the range.

Every wanted owner ends up with exactly one allocation or exactly one error, never both (an owner
whose request fails loses its previous address). Current allocations of owners no longer wanted are
returned as ``released``; their addresses are free for anyone in the same call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError

from vdc.api.virtualswitch import AddressAllocation, Subnet

MAC_PREFIX = "02"
"""First octet of derived MACs: locally administered (bit 1 set), unicast (bit 0 clear)."""

MIN_PREFIX = 30
"""Smallest subnet with room for a gateway and one guest (network, gateway, guest, broadcast)."""

_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def mac_for(uid: str, interface: str) -> str:
    """The MAC of NIC ``interface`` of the VM with metadata.uid ``uid``.

    ``02`` followed by the first 40 bits of sha256(uid NUL interface): locally administered unicast,
    lowercase, stable across restarts and hosts. 40 bits make an accidental collision unlikely
    (about 5e-5 among 10,000 NICs); :func:`allocate` reports one if it happens anyway. (We do not use
    libvirt's ``52:54:00`` prefix: it would leave only 24 bits of hash.)
    """
    digest = hashlib.sha256(f"{uid}\0{interface}".encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in digest[:5])])


def owner_of(namespace: str, vm: str, interface: str) -> str:
    """The owner key of an allocation: ``namespace/vm/interface``."""
    return f"{namespace}/{vm}/{interface}"


def _ip(text: str, what: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 address") from None


@dataclass(frozen=True)
class Pool:
    """The address space of one switch: subnet, gateway and DHCP range (inclusive).

    The gateway may lie inside the range; it is never allocated. Build one with :meth:`parse` or
    :meth:`from_subnet`; construction validates and raises ValueError with a readable message.
    """

    network: IPv4Network
    gateway: IPv4Address
    start: IPv4Address
    end: IPv4Address

    def __post_init__(self) -> None:
        net = self.network
        if net.prefixlen > MIN_PREFIX:
            raise ValueError(f"subnet {net} is too small: the IPAM needs a /{MIN_PREFIX} or larger")
        if self.gateway not in net:
            raise ValueError(f"gateway {self.gateway} is outside {net}")
        if self.gateway in (net.network_address, net.broadcast_address):
            raise ValueError(f"gateway {self.gateway} is the {self._special(self.gateway)} address of {net}")
        for what, ip in (("start", self.start), ("end", self.end)):
            if ip not in net:
                raise ValueError(f"range {what} {ip} is outside {net}")
            if ip in (net.network_address, net.broadcast_address):
                raise ValueError(f"range {what} {ip} is the {self._special(ip)} address of {net}")
        if self.start > self.end:
            raise ValueError(f"range start {self.start} is after range end {self.end}")

    def _special(self, ip: IPv4Address) -> str:
        return "network" if ip == self.network.network_address else "broadcast"

    @classmethod
    def parse(
        cls,
        cidr: str,
        gateway: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> Pool:
        """A pool from the spec's strings.

        Defaults: gateway = the first host address; range = the subnet less the network, broadcast and
        gateway addresses (the gateway is trimmed off the range's ends; inside it is skipped).
        """
        try:
            net = IPv4Network(cidr, strict=False)
        except (AddressValueError, NetmaskValueError, ValueError):
            raise ValueError(f"subnet {cidr!r} is not an IPv4 CIDR") from None
        if str(net.network_address) != cidr.split("/", 1)[0]:
            raise ValueError(f"subnet {cidr} has host bits set; did you mean {net}?")
        first, last = net.network_address + 1, net.broadcast_address - 1
        gw = _ip(gateway, "gateway") if gateway is not None else first
        lo = _ip(start, "range start") if start is not None else (first + 1 if gw == first else first)
        hi = _ip(end, "range end") if end is not None else (last - 1 if gw == last else last)
        return cls(net, gw, lo, hi)

    @classmethod
    def from_subnet(cls, subnet: Subnet) -> Pool:
        """A pool from a VirtualSwitch's ``spec.subnet``."""
        rng = subnet.dhcp_range
        return cls.parse(subnet.cidr, subnet.gateway, rng.start if rng else None, rng.end if rng else None)

    @property
    def range_text(self) -> str:
        return f"{self.start}-{self.end}"

    @property
    def capacity(self) -> int:
        """Addresses the range can hand out (the gateway excluded)."""
        size = int(self.end) - int(self.start) + 1
        return size - 1 if self.in_range(self.gateway) else size

    def in_range(self, ip: IPv4Address) -> bool:
        return self.start <= ip <= self.end

    def problem(self, ip: IPv4Address) -> str | None:
        """Why ``ip`` cannot be allocated to a guest at all (None if it can)."""
        net = self.network
        if ip not in net:
            return f"{ip} is outside {net}"
        if ip == net.network_address:
            return f"{ip} is the network address of {net}"
        if ip == net.broadcast_address:
            return f"{ip} is the broadcast address of {net}"
        if ip == self.gateway:
            return f"{ip} is the gateway"
        return None

    def free(self, allocations: Iterable[Allocation]) -> int:
        """Addresses of the range not in ``allocations`` (for ``status.freeAddresses``)."""
        used = set()
        for a in allocations:
            try:
                ip = IPv4Address(a.ip)
            except AddressValueError:
                continue
            if self.in_range(ip) and ip != self.gateway:
                used.add(ip)
        return self.capacity - len(used)


@dataclass(frozen=True)
class Allocation:
    """One address bound to a MAC and held by ``owner`` (``namespace/vm/interface``)."""

    ip: str
    mac: str
    owner: str

    @classmethod
    def from_api(cls, a: AddressAllocation) -> Allocation:
        return cls(a.ip, a.mac, a.owner)

    def to_api(self) -> AddressAllocation:
        return AddressAllocation(ip=self.ip, mac=self.mac, owner=self.owner)


@dataclass(frozen=True)
class Request:
    """An owner wanting an address for ``mac``: ``fixed_ip`` if set, else one from the range."""

    owner: str
    mac: str
    fixed_ip: str | None = None


@dataclass(frozen=True)
class Result:
    """What :func:`allocate` decided."""

    allocations: tuple[Allocation, ...]
    """The new full list, sorted by IP: write it to ``status.allocations``."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """owner -> why it got no address."""
    released: tuple[Allocation, ...] = ()
    """Current allocations of owners no longer wanted, sorted by IP."""
    free: int = 0
    """Addresses of the range still free (for ``status.freeAddresses``)."""

    def for_owner(self, owner: str) -> Allocation | None:
        return next((a for a in self.allocations if a.owner == owner), None)


def _ip_key(a: Allocation) -> tuple[int, str, str]:
    try:
        return (int(IPv4Address(a.ip)), a.owner, a.mac)
    except AddressValueError:
        return (1 << 32, a.owner, a.mac)


def _mac_problem(mac: str) -> str | None:
    if not _MAC_RE.match(mac):
        return f"{mac!r} is not a MAC address (want xx:xx:xx:xx:xx:xx)"
    if int(mac[:2], 16) & 1:
        return f"{mac} is a multicast MAC"
    if mac == "00:00:00:00:00:00":
        return f"{mac} is not a usable MAC"
    return None


def allocate(pool: Pool, current: Sequence[Allocation], wanted: Sequence[Request]) -> Result:
    """Bind an address to every wanted owner, keeping current addresses where still valid.

    ``current`` is the switch's ``status.allocations`` (tolerated if hand-edited: unparseable or
    duplicate entries are dropped); ``wanted`` must not name an owner twice (ValueError).
    """
    requests: dict[str, Request] = {}
    for r in wanted:
        if r.owner in requests:
            raise ValueError(f"owner {r.owner} is requested twice")
        requests[r.owner] = r

    released = tuple(sorted((a for a in current if a.owner not in requests), key=_ip_key))
    held: dict[str, list[Allocation]] = {}
    for a in sorted(current, key=_ip_key):
        if a.owner in requests:
            held.setdefault(a.owner, []).append(a)

    errors: dict[str, str] = {}
    macs: dict[str, str] = {}  # owner -> normalised MAC
    fixed: dict[str, IPv4Address] = {}

    # 1. What is wrong with a request on its own: its MAC, its fixed IP.
    for owner in sorted(requests):
        r = requests[owner]
        mac = r.mac.strip().lower()
        problem = _mac_problem(mac)
        if problem is None and r.fixed_ip is not None:
            try:
                fixed[owner] = IPv4Address(r.fixed_ip.strip())
            except AddressValueError:
                problem = f"{r.fixed_ip!r} is not an IPv4 address"
            else:
                problem = pool.problem(fixed[owner])
        if problem:
            errors[owner] = problem
        else:
            macs[owner] = mac

    taken: dict[IPv4Address, str] = {}  # ip -> owner
    kept_mac: dict[str, str] = {}  # owner -> MAC of the current allocation it keeps

    # 2. Stability: keep a current address that is still valid (the smaller owner first if corrupt).
    for owner in sorted(macs):
        for a in held.get(owner, ()):
            try:
                ip = IPv4Address(a.ip)
            except AddressValueError:
                continue
            want = fixed.get(owner)
            valid = ip == want if want is not None else pool.in_range(ip)
            if valid and pool.problem(ip) is None and ip not in taken:
                taken[ip] = owner
                kept_mac[owner] = a.mac.strip().lower()
                break

    # 3. One owner per MAC: one keeping an address bound to it, else the smaller owner.
    by_mac: dict[str, list[str]] = {}
    for owner in sorted(macs):
        by_mac.setdefault(macs[owner], []).append(owner)
    for mac, owners in by_mac.items():
        holders = [o for o in owners if kept_mac.get(o) == mac]
        winner = (holders or owners)[0]
        for o in owners:
            if o != winner:
                errors[o] = f"MAC {mac} is used by {winner}"
    for ip, owner in list(taken.items()):
        if owner in errors:
            del taken[ip]
    candidates = [o for o in sorted(macs) if o not in errors]
    placed = set(taken.values())

    # 4. Fixed IPs not kept: not taken by another owner; of new claims the smaller owner wins.
    for owner in candidates:
        if owner in placed or owner not in fixed:
            continue
        ip = fixed[owner]
        if ip in taken:
            errors[owner] = f"{ip} is taken by {taken[ip]}"
        else:
            taken[ip] = owner
            placed.add(owner)

    # 5. Dynamic: the lowest free address of the range, in owner order.
    cursor = int(pool.start)
    last = int(pool.end)
    for owner in candidates:
        if owner in placed or owner in fixed:
            continue
        while cursor <= last and (IPv4Address(cursor) in taken or IPv4Address(cursor) == pool.gateway):
            cursor += 1
        if cursor > last:
            errors[owner] = f"the range {pool.range_text} is exhausted"
            continue
        taken[IPv4Address(cursor)] = owner
        placed.add(owner)

    allocations = tuple(Allocation(str(ip), macs[owner], owner) for ip, owner in sorted(taken.items()))
    return Result(
        allocations=allocations,
        errors=dict(sorted(errors.items())),
        released=released,
        free=pool.free(allocations),
    )


@dataclass(frozen=True)
class Claim:
    """Evidence, found outside the switch's status, that ``mac`` holds ``ip``: a VM's status, or a static
    DHCP entry on a host's network (what a guest's lease came from)."""

    ip: str
    mac: str
    source: str
    """Where it was found, for messages: ``"the VM's status"``, ``"host h1's DHCP entries"``."""
    owner: str | None = None
    """The owner when the source names it (a VM's status); else found by MAC among the requests."""


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` decided: the current allocations to feed :func:`allocate`, and conflicts."""

    current: tuple[Allocation, ...]
    conflicts: Mapping[str, str] = field(default_factory=dict)
    """owner -> why its address is in conflict. Such an owner must get no address (not a new one: its
    guest may still hold the old lease), so leave it out of :func:`allocate`'s requests."""


def recover(pool: Pool, current: Sequence[Allocation], wanted: Sequence[Request], claims: Sequence[Claim]) -> Recovery:
    """The switch's allocations completed from every other place that holds an address.

    A wanted owner the status lost (an older backup restored, a status edited, a crash between writes)
    gets back the address the evidence shows it holding, if that address is still valid for its request
    (its MAC, its fixed IP or else the range) — the first claim wins, in the order given (pass VM
    statuses before DHCP entries). Two owners holding one address is a conflict, never resolved by
    moving either: the owner the status records keeps it; a recovered claimant gets a conflict.
    """
    requests = {r.owner: r for r in wanted}
    by_mac = {r.mac.strip().lower(): r.owner for r in wanted}
    holder: dict[IPv4Address, str] = {}
    for a in current:
        try:
            holder.setdefault(IPv4Address(a.ip), a.owner)
        except AddressValueError:
            continue
    have = {a.owner for a in current if a.owner in requests}
    recovered: dict[str, Allocation] = {}
    conflicts: dict[str, str] = {}
    for claim in claims:
        mac = claim.mac.strip().lower()
        owner = claim.owner or by_mac.get(mac)
        request = requests.get(owner or "")
        if owner is None or request is None or owner in have or owner in recovered or owner in conflicts:
            continue
        try:
            ip = IPv4Address(claim.ip.strip())
        except AddressValueError:
            continue
        fixed = request.fixed_ip.strip() if request.fixed_ip else None
        valid = str(ip) == fixed if fixed else pool.in_range(ip)
        if mac != request.mac.strip().lower() or not valid or pool.problem(ip) is not None:
            continue  # the owner wants another address now: nothing to keep
        other = holder.get(ip)
        if other is not None and other != owner:
            conflicts[owner] = (
                f"address conflict: {ip} is held by {other}, and {claim.source} shows it on {owner} too "
                "(its guest may still hold that lease); delete one of the two, or give one a fixed ipAddress"
            )
            continue
        holder[ip] = owner
        recovered[owner] = Allocation(str(ip), mac, owner)
    return Recovery(
        current=(*current, *sorted(recovered.values(), key=_ip_key)), conflicts=dict(sorted(conflicts.items()))
    )

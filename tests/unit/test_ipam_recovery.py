"""IPAM recovery (``ipam.recover``): the switch's allocations completed from VM statuses and hosts'
DHCP entries, and an address two owners hold reported as a conflict instead of moving anyone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.ipam import Allocation, Claim, Pool, Request, allocate, mac_for, recover

POOL = Pool.parse("10.0.0.0/24")


def req(owner: str, fixed_ip: str | None = None) -> Request:
    return Request(owner, mac_for("uid-" + owner, "eth0"), fixed_ip)


def claim(owner: str, ip: str, *, named: bool = True, source: str = "the VM's status") -> Claim:
    return Claim(ip, mac_for("uid-" + owner, "eth0"), source, owner if named else None)


def test_an_address_the_status_lost_is_taken_back_not_handed_out_again() -> None:
    # The crash of the issue: the status lists only the new VM; the old VM's guest still holds .2.
    old, new = req("ns/old/eth0"), req("ns/new/eth0")
    status = [Allocation("10.0.0.3", new.mac, new.owner)]
    recovery = recover(POOL, status, [old, new], [claim("ns/old/eth0", "10.0.0.2")])
    assert recovery.conflicts == {}
    result = allocate(POOL, recovery.current, [old, new])
    assert {a.owner: a.ip for a in result.allocations} == {"ns/old/eth0": "10.0.0.2", "ns/new/eth0": "10.0.0.3"}


def test_a_dhcp_entry_on_a_host_is_matched_to_its_owner_by_mac() -> None:
    vm = req("ns/a/eth0")
    recovery = recover(POOL, [], [vm], [claim("ns/a/eth0", "10.0.0.40", named=False, source="host h1's DHCP entries")])
    assert recovery.current == (Allocation("10.0.0.40", vm.mac, vm.owner),)


def test_the_vm_status_wins_over_a_later_dhcp_entry() -> None:
    vm = req("ns/a/eth0")
    claims = [claim("ns/a/eth0", "10.0.0.7"), claim("ns/a/eth0", "10.0.0.9", named=False)]
    assert recover(POOL, [], [vm], claims).current == (Allocation("10.0.0.7", vm.mac, vm.owner),)


def test_an_address_held_by_another_owner_is_a_conflict_and_the_claimant_gets_no_address() -> None:
    a, b = req("ns/a/eth0"), req("ns/b/eth0")
    status = [Allocation("10.0.0.2", b.mac, b.owner)]  # handed to b after a's allocation was lost
    recovery = recover(POOL, status, [a, b], [claim("ns/a/eth0", "10.0.0.2")])
    assert list(recovery.conflicts) == ["ns/a/eth0"]
    assert "10.0.0.2 is held by ns/b/eth0" in recovery.conflicts["ns/a/eth0"]
    assert recovery.current == tuple(status)  # nobody moved


def test_two_claims_on_one_address_the_first_wins_and_the_second_is_a_conflict() -> None:
    a, b = req("ns/a/eth0"), req("ns/b/eth0")
    recovery = recover(POOL, [], [a, b], [claim("ns/a/eth0", "10.0.0.5"), claim("ns/b/eth0", "10.0.0.5")])
    assert [x.owner for x in recovery.current] == ["ns/a/eth0"]
    assert list(recovery.conflicts) == ["ns/b/eth0"]


def test_evidence_an_owner_no_longer_wants_is_ignored() -> None:
    fixed = req("ns/a/eth0", "10.0.0.50")  # asked for another address since
    gone = claim("ns/gone/eth0", "10.0.0.6")  # not a wanted owner
    out_of_range = Pool.parse("10.0.0.0/24", start="10.0.0.100", end="10.0.0.200")
    dynamic = req("ns/b/eth0")
    recovery = recover(out_of_range, [], [fixed, dynamic], [claim("ns/a/eth0", "10.0.0.9"), gone,
                                                             claim("ns/b/eth0", "10.0.0.9")])  # fmt: skip
    assert recovery.current == () and recovery.conflicts == {}


def test_an_owner_the_status_records_keeps_its_status_address() -> None:
    a = req("ns/a/eth0")
    status = [Allocation("10.0.0.8", a.mac, a.owner)]
    assert recover(POOL, status, [a], [claim("ns/a/eth0", "10.0.0.9")]).current == tuple(status)


@given(st.lists(st.integers(2, 30), min_size=1, max_size=20), st.integers(0, 20))
@settings(max_examples=200)
def test_property_no_address_is_ever_given_to_two_owners(held: list[int], lost: int) -> None:
    """Owners hold addresses (possibly the same one twice); the status lost some of them; new owners come.
    Whatever happens, no address ends up with two owners and no conflicted owner gets an address."""
    owners = [req(f"ns/vm{i}/eth0") for i in range(len(held))]
    claims = [claim(o.owner, f"10.0.0.{ip}") for o, ip in zip(owners, held, strict=True)]
    status = [Allocation(c.ip, c.mac, c.owner or "") for c in claims[lost:]]
    status = list({a.ip: a for a in reversed(status)}.values())  # a status never holds one address twice
    newcomers = [req(f"ns/new{i}/eth0") for i in range(3)]
    wanted = owners + newcomers
    recovery = recover(POOL, status, wanted, claims)
    result = allocate(POOL, recovery.current, [r for r in wanted if r.owner not in recovery.conflicts])
    ips = [a.ip for a in result.allocations]
    assert len(ips) == len(set(ips))
    assert not {a.owner for a in result.allocations} & set(recovery.conflicts)
    for a in recovery.current:  # nobody holding an address (recorded or recovered) is moved
        kept = result.for_owner(a.owner)
        assert kept is not None and kept.ip == a.ip

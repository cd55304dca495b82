"""Switch IPAM: derived MACs, pools, and the allocation rules (unit tests and hypothesis properties)."""

from __future__ import annotations

import random
import re
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.api.common import MAC
from vdc.api.virtualswitch import AddressAllocation, DhcpRange, Subnet
from vdc.ipam import Allocation, Pool, Request, Result, allocate, mac_for, owner_of

POOL = Pool.parse("10.0.0.0/24")
SMALL = Pool.parse("10.0.0.0/24", start="10.0.0.10", end="10.0.0.12")


def req(owner: str, fixed_ip: str | None = None, mac: str | None = None) -> Request:
    return Request(owner, mac or mac_for("uid-" + owner, "eth0"), fixed_ip)


def ips(result: Result) -> dict[str, str]:
    return {a.owner: a.ip for a in result.allocations}


# --- mac_for -------------------------------------------------------------------------------------


def test_mac_is_deterministic_lowercase_locally_administered_unicast() -> None:
    mac = mac_for("6f1c3a2e-9b7d-4e55-8c1a-0d2f4b6a8e90", "eth0")
    assert mac == mac_for("6f1c3a2e-9b7d-4e55-8c1a-0d2f4b6a8e90", "eth0")
    assert re.match(MAC, mac)
    assert mac == mac.lower()
    assert mac.startswith("02:")
    first = int(mac[:2], 16)
    assert first & 0x02  # locally administered
    assert not first & 0x01  # unicast


def test_mac_depends_on_uid_and_interface() -> None:
    base = mac_for("uid-1", "eth0")
    assert mac_for("uid-2", "eth0") != base
    assert mac_for("uid-1", "eth1") != base
    # No ambiguity between where the uid ends and the interface begins.
    assert mac_for("ab", "c") != mac_for("a", "bc")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=15))
def test_mac_always_valid(uid: str, interface: str) -> None:
    mac = mac_for(uid, interface)
    assert re.match(MAC, mac)
    assert mac.startswith("02:")


def test_mac_no_collisions_among_many_nics() -> None:
    macs = {mac_for(f"uid-{i}", f"eth{j}") for i in range(2000) for j in range(4)}
    assert len(macs) == 8000


def test_owner_of() -> None:
    assert owner_of("ns", "vm", "eth0") == "ns/vm/eth0"


# --- Pool ----------------------------------------------------------------------------------------


def test_pool_defaults() -> None:
    assert POOL.network == IPv4Network("10.0.0.0/24")
    assert POOL.gateway == IPv4Address("10.0.0.1")
    assert (str(POOL.start), str(POOL.end)) == ("10.0.0.2", "10.0.0.254")
    assert POOL.capacity == 253


def test_pool_gateway_at_the_top_is_trimmed_off_the_range() -> None:
    pool = Pool.parse("10.0.0.0/24", gateway="10.0.0.254")
    assert (str(pool.start), str(pool.end)) == ("10.0.0.1", "10.0.0.253")
    assert pool.capacity == 253


def test_pool_gateway_in_the_middle_is_skipped() -> None:
    pool = Pool.parse("10.0.0.0/24", gateway="10.0.0.100")
    assert (str(pool.start), str(pool.end)) == ("10.0.0.1", "10.0.0.254")
    assert pool.capacity == 253
    result = allocate(pool, [], [req(f"ns/vm{i:03}/eth0") for i in range(253)])
    assert not result.errors
    assert "10.0.0.100" not in {a.ip for a in result.allocations}
    assert result.free == 0


def test_pool_explicit_range() -> None:
    assert (str(SMALL.start), str(SMALL.end)) == ("10.0.0.10", "10.0.0.12")
    assert SMALL.capacity == 3
    assert SMALL.range_text == "10.0.0.10-10.0.0.12"
    # Only one end given: the other is the default.
    half = Pool.parse("10.0.0.0/24", start="10.0.0.100")
    assert (str(half.start), str(half.end)) == ("10.0.0.100", "10.0.0.254")


def test_pool_slash_30_has_one_address() -> None:
    pool = Pool.parse("192.168.1.0/30")
    assert (str(pool.gateway), str(pool.start), str(pool.end)) == ("192.168.1.1", "192.168.1.2", "192.168.1.2")
    assert pool.capacity == 1


def test_pool_from_subnet() -> None:
    pool = Pool.from_subnet(
        Subnet(
            cidr="172.16.0.0/16", gateway="172.16.0.254", dhcp_range=DhcpRange(start="172.16.1.0", end="172.16.1.255")
        )
    )
    assert pool == Pool(
        IPv4Network("172.16.0.0/16"),
        IPv4Address("172.16.0.254"),
        IPv4Address("172.16.1.0"),
        IPv4Address("172.16.1.255"),
    )
    assert Pool.from_subnet(Subnet(cidr="10.0.0.0/24")) == POOL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gateway": "10.0.1.1"}, "gateway 10.0.1.1 is outside 10.0.0.0/24"),
        ({"gateway": "10.0.0.0"}, "gateway 10.0.0.0 is the network address of 10.0.0.0/24"),
        ({"gateway": "10.0.0.255"}, "gateway 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
        ({"gateway": "10.0.0.300"}, "gateway '10.0.0.300' is not an IPv4 address"),
        ({"start": "10.0.1.5"}, "range start 10.0.1.5 is outside 10.0.0.0/24"),
        ({"end": "10.0.1.5"}, "range end 10.0.1.5 is outside 10.0.0.0/24"),
        ({"start": "10.0.0.0"}, "range start 10.0.0.0 is the network address of 10.0.0.0/24"),
        ({"end": "10.0.0.255"}, "range end 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
        ({"start": "10.0.0.20", "end": "10.0.0.10"}, "range start 10.0.0.20 is after range end 10.0.0.10"),
        ({"start": "nope"}, "range start 'nope' is not an IPv4 address"),
    ],
)
def test_pool_validation(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Pool.parse("10.0.0.0/24", **kwargs)


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.5/24", "subnet 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?"),
        ("10.0.0.0/31", "subnet 10.0.0.0/31 is too small: the IPAM needs a /30 or larger"),
        ("10.0.0.0/32", "subnet 10.0.0.0/32 is too small: the IPAM needs a /30 or larger"),
        ("10.0.0.0/33", "subnet '10.0.0.0/33' is not an IPv4 CIDR"),
        ("fd00::/64", "subnet 'fd00::/64' is not an IPv4 CIDR"),
    ],
)
def test_pool_bad_subnet(cidr: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Pool.parse(cidr)


def test_pool_problem_messages() -> None:
    assert POOL.problem(IPv4Address("10.0.0.5")) is None
    assert POOL.problem(IPv4Address("10.0.1.5")) == "10.0.1.5 is outside 10.0.0.0/24"
    assert POOL.problem(IPv4Address("10.0.0.1")) == "10.0.0.1 is the gateway"


# --- allocate: dynamic ---------------------------------------------------------------------------


def test_dynamic_lowest_free_first_in_owner_order() -> None:
    result = allocate(POOL, [], [req("ns/b/eth0"), req("ns/a/eth0"), req("ns/c/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.2", "ns/b/eth0": "10.0.0.3", "ns/c/eth0": "10.0.0.4"}
    assert not result.errors
    assert result.released == ()
    assert result.free == 250


def test_dynamic_fills_holes() -> None:
    current = [Allocation("10.0.0.2", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    current.append(Allocation("10.0.0.4", mac_for("uid-ns/c/eth0", "eth0"), "ns/c/eth0"))
    result = allocate(POOL, current, [req("ns/a/eth0"), req("ns/c/eth0"), req("ns/b/eth0"), req("ns/d/eth0")])
    assert ips(result) == {
        "ns/a/eth0": "10.0.0.2",
        "ns/b/eth0": "10.0.0.3",
        "ns/c/eth0": "10.0.0.4",
        "ns/d/eth0": "10.0.0.5",
    }


def test_allocations_sorted_numerically_by_ip() -> None:
    result = allocate(POOL, [], [req(f"ns/vm{i:02}/eth0") for i in range(12)])
    got = [a.ip for a in result.allocations]
    assert got == [f"10.0.0.{i}" for i in range(2, 14)]


def test_exhausted() -> None:
    wanted = [req(f"ns/vm{i}/eth0") for i in range(5)]
    result = allocate(SMALL, [], wanted)
    assert ips(result) == {"ns/vm0/eth0": "10.0.0.10", "ns/vm1/eth0": "10.0.0.11", "ns/vm2/eth0": "10.0.0.12"}
    assert result.errors == {
        "ns/vm3/eth0": "the range 10.0.0.10-10.0.0.12 is exhausted",
        "ns/vm4/eth0": "the range 10.0.0.10-10.0.0.12 is exhausted",
    }
    assert result.free == 0


def test_exhausted_newcomer_does_not_evict_holder() -> None:
    first = allocate(SMALL, [], [req("ns/x/eth0"), req("ns/y/eth0"), req("ns/z/eth0")])
    # "ns/a" sorts first but the holders keep their addresses.
    second = allocate(
        SMALL, first.allocations, [req("ns/a/eth0"), req("ns/x/eth0"), req("ns/y/eth0"), req("ns/z/eth0")]
    )
    assert ips(second) == ips(first)
    assert second.errors == {"ns/a/eth0": "the range 10.0.0.10-10.0.0.12 is exhausted"}


# --- allocate: stability -------------------------------------------------------------------------


def test_keeps_current_address() -> None:
    current = [Allocation("10.0.0.200", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0"), req("ns/b/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.200", "ns/b/eth0": "10.0.0.2"}


def test_kept_allocation_takes_the_requested_mac() -> None:
    current = [Allocation("10.0.0.7", "02:00:00:00:00:01", "ns/a/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", mac="02:00:00:00:00:02")])
    assert result.allocations == (Allocation("10.0.0.7", "02:00:00:00:00:02", "ns/a/eth0"),)


def test_dynamic_holder_outside_shrunk_range_moves_into_it() -> None:
    current = [Allocation("10.0.0.200", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    result = allocate(SMALL, current, [req("ns/a/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.10"}


def test_holder_of_new_gateway_is_moved() -> None:
    current = [Allocation("10.0.0.2", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    pool = Pool.parse("10.0.0.0/24", gateway="10.0.0.2")
    result = allocate(pool, current, [req("ns/a/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.1"}


def test_holder_outside_new_subnet_is_moved() -> None:
    current = [Allocation("10.0.0.7", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    result = allocate(Pool.parse("10.1.0.0/24"), current, [req("ns/a/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.1.0.2"}


def test_fixed_ip_change_moves_the_owner() -> None:
    current = [Allocation("10.0.0.2", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", "10.0.0.50")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.50"}


def test_fixed_ip_removed_keeps_address_inside_the_range() -> None:
    current = [Allocation("10.0.0.50", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    assert ips(allocate(POOL, current, [req("ns/a/eth0")])) == {"ns/a/eth0": "10.0.0.50"}
    # Outside the range it moves into it.
    current = [Allocation("10.0.0.50", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0")]
    assert ips(allocate(SMALL, current, [req("ns/a/eth0")])) == {"ns/a/eth0": "10.0.0.10"}


def test_failing_owner_loses_its_previous_address() -> None:
    current = [
        Allocation("10.0.0.2", mac_for("uid-ns/a/eth0", "eth0"), "ns/a/eth0"),
        Allocation("10.0.0.3", mac_for("uid-ns/b/eth0", "eth0"), "ns/b/eth0"),
    ]
    result = allocate(POOL, current, [req("ns/a/eth0", "10.0.0.3"), req("ns/b/eth0")])
    assert ips(result) == {"ns/b/eth0": "10.0.0.3"}
    assert result.errors == {"ns/a/eth0": "10.0.0.3 is taken by ns/b/eth0"}
    assert result.released == ()


# --- allocate: fixed IPs -------------------------------------------------------------------------


def test_fixed_ip_may_be_outside_the_range() -> None:
    result = allocate(SMALL, [], [req("ns/a/eth0", "10.0.0.200"), req("ns/b/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.200", "ns/b/eth0": "10.0.0.10"}
    assert result.free == 2


def test_fixed_ip_inside_the_range_is_skipped_by_dynamic() -> None:
    result = allocate(POOL, [], [req("ns/z/eth0", "10.0.0.2"), req("ns/a/eth0")])
    assert ips(result) == {"ns/z/eth0": "10.0.0.2", "ns/a/eth0": "10.0.0.3"}


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("10.0.1.5", "10.0.1.5 is outside 10.0.0.0/24"),
        ("10.0.0.1", "10.0.0.1 is the gateway"),
        ("10.0.0.0", "10.0.0.0 is the network address of 10.0.0.0/24"),
        ("10.0.0.255", "10.0.0.255 is the broadcast address of 10.0.0.0/24"),
        ("10.0.0", "'10.0.0' is not an IPv4 address"),
    ],
)
def test_fixed_ip_errors(ip: str, message: str) -> None:
    result = allocate(POOL, [], [req("ns/a/eth0", ip), req("ns/b/eth0")])
    assert result.errors == {"ns/a/eth0": message}
    assert ips(result) == {"ns/b/eth0": "10.0.0.2"}


def test_fixed_ip_taken_by_dynamic_holder() -> None:
    current = [Allocation("10.0.0.7", mac_for("uid-ns/b/eth0", "eth0"), "ns/b/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", "10.0.0.7"), req("ns/b/eth0")])
    assert result.errors == {"ns/a/eth0": "10.0.0.7 is taken by ns/b/eth0"}
    assert ips(result) == {"ns/b/eth0": "10.0.0.7"}


def test_same_fixed_ip_holder_wins_over_smaller_owner() -> None:
    current = [Allocation("10.0.0.7", mac_for("uid-ns/z/eth0", "eth0"), "ns/z/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", "10.0.0.7"), req("ns/z/eth0", "10.0.0.7")])
    assert ips(result) == {"ns/z/eth0": "10.0.0.7"}
    assert result.errors == {"ns/a/eth0": "10.0.0.7 is taken by ns/z/eth0"}


def test_same_fixed_ip_smaller_owner_wins() -> None:
    wanted = [req("ns/b/eth0", "10.0.0.7"), req("ns/a/eth0", "10.0.0.7"), req("ns/c/eth0", "10.0.0.7")]
    result = allocate(POOL, [], wanted)
    assert ips(result) == {"ns/a/eth0": "10.0.0.7"}
    assert result.errors == {
        "ns/b/eth0": "10.0.0.7 is taken by ns/a/eth0",
        "ns/c/eth0": "10.0.0.7 is taken by ns/a/eth0",
    }


def test_fixed_ip_of_a_released_owner_is_free() -> None:
    current = [Allocation("10.0.0.7", mac_for("uid-ns/old/eth0", "eth0"), "ns/old/eth0")]
    result = allocate(POOL, current, [req("ns/new/eth0", "10.0.0.7")])
    assert ips(result) == {"ns/new/eth0": "10.0.0.7"}
    assert result.released == tuple(current)


# --- allocate: MACs ------------------------------------------------------------------------------


def test_mac_conflict_smaller_owner_wins() -> None:
    mac = "02:aa:bb:cc:dd:ee"
    result = allocate(POOL, [], [req("ns/b/eth0", mac=mac), req("ns/a/eth0", mac=mac)])
    assert ips(result) == {"ns/a/eth0": "10.0.0.2"}
    assert result.errors == {"ns/b/eth0": "MAC 02:aa:bb:cc:dd:ee is used by ns/a/eth0"}


def test_mac_conflict_holder_wins() -> None:
    mac = "02:aa:bb:cc:dd:ee"
    current = [Allocation("10.0.0.9", mac, "ns/z/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", mac=mac), req("ns/z/eth0", mac=mac)])
    assert ips(result) == {"ns/z/eth0": "10.0.0.9"}
    assert result.errors == {"ns/a/eth0": "MAC 02:aa:bb:cc:dd:ee is used by ns/z/eth0"}


def test_mac_of_a_released_owner_is_free() -> None:
    mac = "02:aa:bb:cc:dd:ee"
    current = [Allocation("10.0.0.9", mac, "ns/old/eth0")]
    result = allocate(POOL, current, [req("ns/new/eth0", mac=mac)])
    assert result.allocations == (Allocation("10.0.0.2", mac, "ns/new/eth0"),)


def test_mac_is_normalised_to_lowercase() -> None:
    result = allocate(POOL, [], [req("ns/a/eth0", mac="02:AA:BB:CC:DD:EE"), req("ns/b/eth0", mac="02:aa:bb:cc:dd:ee")])
    assert result.allocations == (Allocation("10.0.0.2", "02:aa:bb:cc:dd:ee", "ns/a/eth0"),)
    assert result.errors == {"ns/b/eth0": "MAC 02:aa:bb:cc:dd:ee is used by ns/a/eth0"}


@pytest.mark.parametrize(
    ("mac", "message"),
    [
        ("02:aa:bb:cc:dd", "'02:aa:bb:cc:dd' is not a MAC address (want xx:xx:xx:xx:xx:xx)"),
        ("02-aa-bb-cc-dd-ee", "'02-aa-bb-cc-dd-ee' is not a MAC address (want xx:xx:xx:xx:xx:xx)"),
        ("01:00:5e:00:00:01", "01:00:5e:00:00:01 is a multicast MAC"),
        ("ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff is a multicast MAC"),
        ("00:00:00:00:00:00", "00:00:00:00:00:00 is not a usable MAC"),
    ],
)
def test_bad_mac(mac: str, message: str) -> None:
    result = allocate(POOL, [], [req("ns/a/eth0", mac=mac)])
    assert result.errors == {"ns/a/eth0": message}
    assert result.allocations == ()


# --- allocate: release, inputs -------------------------------------------------------------------


def test_release() -> None:
    first = allocate(POOL, [], [req("ns/a/eth0"), req("ns/b/eth0"), req("ns/c/eth0")])
    second = allocate(POOL, first.allocations, [req("ns/a/eth0"), req("ns/c/eth0")])
    assert ips(second) == {"ns/a/eth0": "10.0.0.2", "ns/c/eth0": "10.0.0.4"}
    assert [a.owner for a in second.released] == ["ns/b/eth0"]
    # The freed address is reused, even in the same call as the release.
    third = allocate(POOL, first.allocations, [req("ns/a/eth0"), req("ns/c/eth0"), req("ns/d/eth0")])
    assert ips(third)["ns/d/eth0"] == "10.0.0.3"


def test_duplicate_owner_in_wanted_is_a_bug() -> None:
    with pytest.raises(ValueError, match="owner ns/a/eth0 is requested twice"):
        allocate(POOL, [], [req("ns/a/eth0"), req("ns/a/eth0", "10.0.0.9")])


def test_corrupt_current_is_tolerated() -> None:
    mac_a, mac_b = mac_for("uid-ns/a/eth0", "eth0"), mac_for("uid-ns/b/eth0", "eth0")
    current = [
        Allocation("garbage", mac_a, "ns/a/eth0"),
        Allocation("10.0.0.9", mac_a, "ns/a/eth0"),
        Allocation("10.0.0.5", mac_a, "ns/a/eth0"),  # two entries for one owner: the lowest valid is kept
        Allocation("10.0.0.9", mac_b, "ns/b/eth0"),  # same IP as another owner: the smaller owner keeps it
    ]
    result = allocate(POOL, current, [req("ns/a/eth0"), req("ns/b/eth0")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.5", "ns/b/eth0": "10.0.0.9"}
    result = allocate(POOL, current[1:], [req("ns/b/eth0"), req("ns/a/eth0", "10.0.0.9")])
    assert ips(result) == {"ns/a/eth0": "10.0.0.9", "ns/b/eth0": "10.0.0.2"}


def test_api_round_trip() -> None:
    a = Allocation("10.0.0.2", "02:aa:bb:cc:dd:ee", "ns/a/eth0")
    api = a.to_api()
    assert isinstance(api, AddressAllocation)
    assert api.to_wire() == {"ip": "10.0.0.2", "mac": "02:aa:bb:cc:dd:ee", "owner": "ns/a/eth0"}
    assert Allocation.from_api(api) == a


def test_free_counts_range_only() -> None:
    current = [Allocation("10.0.0.200", "02:00:00:00:00:01", "x/y/z"), Allocation("bad", "02:00:00:00:00:02", "x/y/w")]
    assert SMALL.free(current) == 3
    assert SMALL.free([Allocation("10.0.0.11", "02:00:00:00:00:01", "x/y/z")]) == 2


def test_mac_for_requests_on_a_slash_24_fit_exactly() -> None:
    wanted = [Request(owner_of("ns", f"vm{i}", "eth0"), mac_for(f"uid-{i}", "eth0")) for i in range(254)]
    result = allocate(POOL, [], wanted)
    assert len(result.allocations) == 253
    assert len(result.errors) == 1
    assert result.free == 0


# --- properties ----------------------------------------------------------------------------------

OWNERS = [f"ns{n}/vm{v}/eth{e}" for n in range(2) for v in range(4) for e in range(2)]
MACS = [f"02:00:00:00:00:{i:02x}" for i in range(12)]


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    prefix = draw(st.integers(min_value=26, max_value=30))
    net = IPv4Network(f"10.0.0.0/{prefix}")
    hosts = list(net.hosts())
    gateway = draw(st.sampled_from(hosts))
    lo, hi = sorted(draw(st.lists(st.sampled_from(hosts), min_size=2, max_size=2)))
    return Pool(net, gateway, lo, hi)


def addresses() -> st.SearchStrategy[str]:
    # Mostly inside 10.0.0.0/26, with a little outside and a little garbage.
    inside = st.integers(min_value=0, max_value=70).map(lambda i: f"10.0.0.{i}")
    return st.one_of(inside, st.just("10.0.1.1"), st.just("not-an-ip"))


def requests_() -> st.SearchStrategy[list[Request]]:
    one = st.builds(
        Request,
        owner=st.sampled_from(OWNERS),
        mac=st.sampled_from(MACS),
        fixed_ip=st.one_of(st.none(), st.none(), addresses()),
    )
    return st.lists(one, max_size=12, unique_by=lambda r: r.owner)


def currents() -> st.SearchStrategy[list[Allocation]]:
    one = st.builds(Allocation, ip=addresses(), mac=st.sampled_from(MACS), owner=st.sampled_from(OWNERS))
    return st.lists(one, max_size=10)


def check_invariants(pool: Pool, wanted: list[Request], result: Result) -> None:
    allocated = [a.ip for a in result.allocations]
    assert len(set(allocated)) == len(allocated), "an IP is allocated twice"
    macs = [a.mac for a in result.allocations]
    assert len(set(macs)) == len(macs), "a MAC is bound twice"
    owners = [a.owner for a in result.allocations]
    assert len(set(owners)) == len(owners)
    assert set(owners).isdisjoint(result.errors)
    assert set(owners) | set(result.errors) == {r.owner for r in wanted}
    by_owner = {r.owner: r for r in wanted}
    for a in result.allocations:
        ip = IPv4Address(a.ip)
        assert ip in pool.network
        assert ip not in (pool.network.network_address, pool.network.broadcast_address, pool.gateway)
        r = by_owner[a.owner]
        assert a.mac == r.mac
        if r.fixed_ip is None:
            assert pool.start <= ip <= pool.end
        else:
            assert a.ip == r.fixed_ip
    assert [IPv4Address(a.ip) for a in result.allocations] == sorted(IPv4Address(a.ip) for a in result.allocations)
    assert result.free == pool.capacity - sum(1 for a in result.allocations if pool.in_range(IPv4Address(a.ip)))


@given(pools(), currents(), requests_())
@settings(max_examples=300)
def test_property_invariants(pool: Pool, current: list[Allocation], wanted: list[Request]) -> None:
    check_invariants(pool, wanted, allocate(pool, current, wanted))


@given(pools(), currents(), requests_())
@settings(max_examples=300)
def test_property_idempotent(pool: Pool, current: list[Allocation], wanted: list[Request]) -> None:
    first = allocate(pool, current, wanted)
    second = allocate(pool, first.allocations, wanted)
    assert second.allocations == first.allocations
    assert second.errors == first.errors
    assert second.released == ()


@given(pools(), currents(), requests_(), st.randoms(use_true_random=False))
def test_property_order_independent(
    pool: Pool, current: list[Allocation], wanted: list[Request], rnd: random.Random
) -> None:
    shuffled_current, shuffled_wanted = current[:], wanted[:]
    rnd.shuffle(shuffled_current)
    rnd.shuffle(shuffled_wanted)
    assert allocate(pool, shuffled_current, shuffled_wanted) == allocate(pool, current, wanted)


@given(pools(), currents(), requests_(), requests_(), st.data())
@settings(max_examples=300)
def test_property_stable_when_others_come_and_go(
    pool: Pool, current: list[Allocation], wanted: list[Request], newcomers: list[Request], data: st.DataObject
) -> None:
    first = allocate(pool, current, wanted)
    stay = data.draw(st.lists(st.sampled_from(wanted), unique_by=lambda r: r.owner) if wanted else st.just([]))
    staying = {r.owner for r in stay}
    later = stay + [r for r in newcomers if r.owner not in staying]
    second = allocate(pool, first.allocations, later)
    check_invariants(pool, later, second)
    before, after = ips(first), ips(second)
    for owner in staying:
        if owner in before:
            assert after.get(owner) == before[owner], f"{owner} moved"
    assert {a.owner for a in second.released} == set(before) - {r.owner for r in later}


@given(st.lists(st.uuids().map(str), min_size=50, max_size=50, unique=True))
@settings(max_examples=50)
def test_property_50_simultaneous_requests_on_a_slash_24(uids: list[str]) -> None:
    wanted = [Request(owner_of("ns", f"vm-{u}", "eth0"), mac_for(u, "eth0")) for u in uids]
    result = allocate(POOL, [], wanted)
    assert not result.errors
    assert len({a.ip for a in result.allocations}) == 50
    assert len({a.mac for a in result.allocations}) == 50
    # Lowest free first: exactly the first 50 addresses of the range.
    assert {a.ip for a in result.allocations} == {f"10.0.0.{i}" for i in range(2, 52)}
    assert result.free == 203


@given(st.sets(st.integers(min_value=0, max_value=12), min_size=1), st.integers(min_value=1, max_value=5))
def test_property_release_frees_addresses_for_reuse(gone: set[int], newcomers: int) -> None:
    pool = Pool.parse("10.0.0.0/28")  # 13 addresses: 10.0.0.2-10.0.0.14
    full = allocate(pool, [], [req(f"ns/vm{i:02}/eth0") for i in range(13)])
    assert full.free == 0
    assert not full.errors
    assert allocate(pool, full.allocations, [*(req(f"ns/vm{i:02}/eth0") for i in range(13)), req("ns/new/eth0")]).errors
    freed = sorted(IPv4Address(ips(full)[f"ns/vm{i:02}/eth0"]) for i in gone)
    kept = [req(f"ns/vm{i:02}/eth0") for i in range(13) if i not in gone]
    released = allocate(pool, full.allocations, kept)
    assert released.free == len(gone)
    assert sorted(IPv4Address(a.ip) for a in released.released) == freed
    new = [req(f"ns/new{j}/eth0") for j in range(newcomers)]
    reused = allocate(pool, released.allocations, kept + new)
    got = [IPv4Address(ips(reused)[r.owner]) for r in new if r.owner in ips(reused)]
    assert got == freed[: len(got)]
    assert len(got) == min(newcomers, len(gone))
    assert len(reused.errors) == newcomers - len(got)


def test_mac_winner_that_fails_later_still_wins() -> None:
    # Found by hypothesis: the owner of an invalid allocation must not count as the MAC's holder,
    # or the next call (where it holds nothing) would pick a different winner.
    pool = Pool.parse("10.0.0.0/24", start="10.0.0.2", end="10.0.0.2")
    mac = "02:00:00:00:00:00"
    current = [Allocation("10.0.1.1", mac, "ns/b/eth0"), Allocation("10.0.0.2", "02:00:00:00:00:01", "ns/c/eth0")]
    wanted = [req("ns/a/eth0", mac=mac), req("ns/b/eth0", mac=mac), req("ns/c/eth0", mac="02:00:00:00:00:01")]
    first = allocate(pool, current, wanted)
    assert first.errors == {
        "ns/a/eth0": "the range 10.0.0.2-10.0.0.2 is exhausted",
        "ns/b/eth0": "MAC 02:00:00:00:00:00 is used by ns/a/eth0",
    }
    assert allocate(pool, first.allocations, wanted) == first


def test_mac_keeper_of_another_mac_does_not_win() -> None:
    mac = "02:aa:bb:cc:dd:ee"
    current = [Allocation("10.0.0.9", "02:00:00:00:00:01", "ns/z/eth0")]
    result = allocate(POOL, current, [req("ns/a/eth0", mac=mac), req("ns/z/eth0", mac=mac)])
    assert ips(result) == {"ns/a/eth0": "10.0.0.2"}
    assert result.errors == {"ns/z/eth0": "MAC 02:aa:bb:cc:dd:ee is used by ns/a/eth0"}


def test_invalid_request_does_not_block_a_mac() -> None:
    mac = "02:aa:bb:cc:dd:ee"
    result = allocate(POOL, [], [req("ns/a/eth0", "10.0.0.1", mac=mac), req("ns/b/eth0", mac=mac)])
    assert result.errors == {"ns/a/eth0": "10.0.0.1 is the gateway"}
    assert ips(result) == {"ns/b/eth0": "10.0.0.2"}

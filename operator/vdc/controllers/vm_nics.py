"""A VM's NICs: the limits of a port (the NIC's, never above its switch's) and what status shows of a
NIC once its domain runs. Pure."""

from __future__ import annotations

from typing import Any

from vdc.api.common import Bandwidth
from vdc.api.virtualmachine import InterfaceStatus
from vdc.libvirt import domains
from vdc.libvirt.domain_xml import BandwidthConfig, BandwidthLimitConfig


class AddressRefused(ValueError):
    """The switch's IPAM refused a NIC's address (the message names it)."""


class WaitingForAddress(Exception):
    """A NIC has no address on its switch yet (or the switch does not exist yet): the message says which."""


def nic_status_observed(
    nics: list[InterfaceStatus], observed: domains.DomainObservation | None, leases: dict[str, tuple[str, ...]]
) -> list[InterfaceStatus]:
    """NIC status with what the host shows: each NIC's host device (tap) while the domain runs, and the
    addresses the guest leased besides the IPAM's (the IPAM's first)."""
    devices = {i.mac: i.target_dev for i in (observed.live.interfaces if observed and observed.live else ())}
    out = []
    for nic in nics:
        ipam = nic.ip_addresses[:1]
        leased = [ip for ip in leases.get(nic.mac_address or "", ()) if ip not in ipam]
        out.append(
            nic.model_copy(update={"host_device": devices.get(nic.mac_address or ""), "ip_addresses": ipam + leased})
        )
    return out


def bandwidth(switch_default: dict[str, Any] | None, nic: Bandwidth | None) -> BandwidthConfig | None:
    """The NIC's limits, never above the switch's (a port group's policy, lowered per port)."""

    def pick(direction: str) -> BandwidthLimitConfig | None:
        base: dict[str, int] | None = (switch_default or {}).get(direction)
        own = getattr(nic, direction) if nic is not None else None
        if base is None:
            return None if own is None else BandwidthLimitConfig(own.average, own.peak, own.burst)
        if own is None:
            return BandwidthLimitConfig(base["average"], base.get("peak"), base.get("burst"))

        def lower(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return BandwidthLimitConfig(
            min(own.average, base["average"]), lower(own.peak, base.get("peak")), lower(own.burst, base.get("burst"))
        )

    inbound, outbound = pick("inbound"), pick("outbound")
    return BandwidthConfig(inbound, outbound) if inbound or outbound else None

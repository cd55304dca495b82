"""libvirt's (state, reason) of a domain -> what the plan reads (``domains.state_of``): the state, why a
shut-off domain is off, and why a paused one is paused (VM monitoring resets a guest paused on an I/O
error, by its watchdog, or after a panic)."""

from __future__ import annotations

import libvirt
import pytest

from vdc.libvirt.domains import state_of


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_PAUSED_IOERROR, "ioerror"),
        (libvirt.VIR_DOMAIN_PAUSED_WATCHDOG, "watchdog"),
        (libvirt.VIR_DOMAIN_PAUSED_CRASHED, "crashed"),
        (libvirt.VIR_DOMAIN_PAUSED_USER, "other"),
        (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, "other"),
        (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, "other"),
        (libvirt.VIR_DOMAIN_PAUSED_UNKNOWN, "other"),
        (999, "other"),
    ],
)
def test_the_reason_of_a_paused_domain(reason: int, expected: str) -> None:
    assert state_of(libvirt.VIR_DOMAIN_PAUSED, reason) == ("paused", "other", expected)


def test_a_pm_suspended_guest_is_paused_for_another_reason() -> None:
    # PMSUSPENDED reasons are numbered apart from PAUSED's: 1 is not an I/O error there.
    assert state_of(libvirt.VIR_DOMAIN_PMSUSPENDED, libvirt.VIR_DOMAIN_PAUSED_IOERROR) == ("paused", "other", "other")


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, ("running", "other", None)),
        # The same numbers as the PAUSED reasons: they must not be read as one.
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED_WATCHDOG, ("running", "other", None)),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, ("shutoff", "guest", None)),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, ("shutoff", "crashed", None)),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, ("crashed", "other", None)),
        (libvirt.VIR_DOMAIN_NOSTATE, 0, ("other", "other", None)),
    ],
)
def test_other_states_have_no_paused_reason(state: int, reason: int, expected: tuple[str, str, None]) -> None:
    assert state_of(state, reason) == expected

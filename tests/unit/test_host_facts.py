"""What a host is (``libvirt.host_facts``): capabilities parsing, facts read from a live connection, and
the domain type VMs get on it.

The domain-type choice is ``HostFacts.domain_type(virtualization)`` (Host.spec.virtualization: Auto, KVM,
Emulated); with Auto it is what ``preferred_domain_type`` was before that field existed, and the tests
of the Auto choice run against whichever of the two the module has.
"""

from __future__ import annotations

import re
import typing
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from vdc.libvirt.host_facts import HostFacts, _version, parse_capabilities, read_host_facts

# A QEMU host with KVM (trimmed from what libvirt 9 returns): x86_64 and i686 guests with qemu and kvm,
# plus an emulated aarch64 guest, which must not count.
KVM_HOST = """<capabilities>
  <host>
    <uuid>4c4c4544-0042-3510-8052-b4c04f4e3632</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Skylake-Client-IBRS</model>
      <vendor>Intel</vendor>
      <topology sockets='1' dies='1' cores='4' threads='2'/>
    </cpu>
    <migration_features><live/></migration_features>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/qemu-system-i386</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
    <features><acpi default='on' toggle='yes'/></features>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='aarch64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-aarch64</emulator>
      <domain type='qemu'/>
      <domain type='hvf'/>
    </arch>
  </guest>
</capabilities>"""

# The same host without /dev/kvm: QEMU under TCG only.
TCG_HOST = KVM_HOST.replace("<domain type='kvm'/>", "")

# Only a foreign architecture and a malformed <guest> without <arch>.
FOREIGN_HOST = """<capabilities>
  <host><cpu><arch>aarch64</arch></cpu></host>
  <guest><os_type>hvm</os_type></guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='aarch64'><domain type='kvm'/><domain/></arch>
  </guest>
</capabilities>"""


def facts(types: set[str]) -> HostFacts:
    return HostFacts(
        hostname="h",
        host_uuid="",
        cpus=4,
        memory_bytes=2**33,
        libvirt_version="9.0.0",
        hypervisor="QEMU",
        hypervisor_version="7.2.0",
        domain_types=frozenset(types),
    )


def choose(host: HostFacts, virtualization: str = "Auto") -> str:
    """The domain type VMs get on ``host``."""
    method = getattr(host, "domain_type", None)
    if callable(method):
        return str(method(virtualization))
    assert virtualization == "Auto", "this HostFacts has no virtualization choice"
    return str(host.preferred_domain_type)  # type: ignore[attr-defined]


needs_virtualization = pytest.mark.skipif(
    not callable(getattr(HostFacts, "domain_type", None)), reason="HostFacts has no domain_type(virtualization)"
)


@pytest.fixture(scope="module")
def test_driver() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


# --- parse_capabilities --------------------------------------------------------------------------


def test_kvm_host_capabilities() -> None:
    host_uuid, types = parse_capabilities(KVM_HOST)
    assert host_uuid == "4c4c4544-0042-3510-8052-b4c04f4e3632"
    assert types == frozenset({"qemu", "kvm"})


def test_tcg_only_host_capabilities() -> None:
    assert parse_capabilities(TCG_HOST) == ("4c4c4544-0042-3510-8052-b4c04f4e3632", frozenset({"qemu"}))


def test_foreign_architectures_and_incomplete_guests_are_ignored() -> None:
    assert parse_capabilities(FOREIGN_HOST) == ("", frozenset())


def test_capabilities_of_libvirts_test_driver(test_driver: typing.Any) -> None:
    host_uuid, types = parse_capabilities(test_driver.getCapabilities())
    assert types == frozenset({"test"})  # i686 guests of domain type "test"
    assert host_uuid == ""  # the default test host has no <uuid>


def test_malformed_capabilities_raise() -> None:
    with pytest.raises(ET.ParseError):
        parse_capabilities("<capabilities>")


# --- read_host_facts -----------------------------------------------------------------------------


def test_facts_of_libvirts_test_driver(test_driver: typing.Any) -> None:
    got = read_host_facts(test_driver)
    info = test_driver.getInfo()
    assert got.hostname == test_driver.getHostname()
    assert got.cpus == info[2] == 16
    assert got.memory_bytes == info[1] * 2**20 == 3 * 2**30
    assert got.hypervisor == "TEST"
    assert re.fullmatch(r"\d+\.\d+\.\d+", got.libvirt_version)
    assert got.libvirt_version == _version(test_driver.getLibVersion())
    assert got.hypervisor_version == _version(test_driver.getVersion())
    assert got.domain_types == frozenset({"test"})
    assert choose(got) == "test"


class _NoVersion:
    """A connection whose driver cannot tell its hypervisor version (some drivers refuse getVersion)."""

    def __init__(self, real: typing.Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._real, name)

    def getVersion(self) -> int:  # libvirt's name
        import libvirt

        raise libvirt.libvirtError("this driver does not report a version")


def test_an_unknown_hypervisor_version_is_empty(test_driver: typing.Any) -> None:
    assert read_host_facts(_NoVersion(test_driver)).hypervisor_version == ""


@pytest.mark.parametrize(
    ("number", "text"),
    [(9_000_000, "9.0.0"), (8_002_001, "8.2.1"), (10_010_000, "10.10.0"), (7_002_000, "7.2.0"), (2, "0.0.2")],
)
def test_version_numbers_are_libvirts_major_minor_micro(number: int, text: str) -> None:
    assert _version(number) == text


# --- preferred_domain_type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "preferred"),
    [
        ({"kvm", "qemu"}, "kvm"),
        ({"kvm"}, "kvm"),
        ({"qemu"}, "qemu"),
        ({"qemu", "test"}, "qemu"),
        ({"test"}, "test"),
        ({"kvm", "qemu", "test"}, "kvm"),
        (set(), "qemu"),
        ({"hvf", "xen"}, "qemu"),
    ],
)
def test_preferred_domain_type(types: set[str], preferred: str) -> None:
    assert choose(facts(types)) == preferred


@pytest.mark.parametrize(("doc", "preferred"), [(KVM_HOST, "kvm"), (TCG_HOST, "qemu"), (FOREIGN_HOST, "qemu")])
def test_preferred_domain_type_from_capabilities(doc: str, preferred: str) -> None:
    assert choose(facts(set(parse_capabilities(doc)[1]))) == preferred


@needs_virtualization
@pytest.mark.parametrize(
    ("types", "virtualization", "expected"),
    [
        ({"kvm", "qemu"}, "Auto", "kvm"),
        ({"kvm", "qemu"}, "Emulated", "qemu"),  # /dev/kvm there but unusable (nested): TCG on request
        ({"kvm", "qemu"}, "KVM", "kvm"),
        ({"qemu"}, "Auto", "qemu"),
        ({"qemu"}, "Emulated", "qemu"),
        ({"test"}, "Auto", "test"),  # libvirt's test driver has only its own type, whatever is asked
        ({"test"}, "Emulated", "test"),
        ({"test"}, "KVM", "test"),
    ],
)
def test_domain_type_follows_the_hosts_virtualization(types: set[str], virtualization: str, expected: str) -> None:
    assert choose(facts(types), virtualization) == expected

"""VM policy (``vm_domain.domain_for``): which libvirt domain a VirtualMachine becomes.

Field by field (identity, memory, CPU, firmware, kernel boot, console, VNC, CPU QoS), what is not
supported yet (UnsupportedSpec), and — for a fixed set of varied specs and for generated ones — that
every DomainConfig it produces validates against libvirt's domain schema (``virt-xml-validate``),
is accepted by libvirt's ``test:///default`` driver, and reads back with no difference the plan
would act on.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.disk_sources import AttachedVolume
from vdc.controllers.vm_domain import (
    CONSOLE_LOG_DIR,
    CPU_PERIOD_US,
    UnsupportedSpec,
    domain_for,
    domain_name,
)
from vdc.controllers.vm_plan import differing_fields, plan_vm
from vdc.libvirt.domain_xml import (
    CpuConfig,
    CpuTuneConfig,
    DomainConfig,
    DomainType,
    DomainXmlError,
    GraphicsConfig,
    MemTuneConfig,
    OsConfig,
    OwnerMetadata,
    SerialConsoleConfig,
    WatchdogConfig,
)
from vdc.libvirt.domains import observe_domain

UID = "3f2b8c1a-9d4e-4f6a-8b7c-1d2e3f4a5b6c"
KERNEL = "/var/lib/libvirt/boot/vdc-tiny/vmlinuz"
INITRD = "/var/lib/libvirt/boot/vdc-tiny/initrd.img"
VIR_DOMAIN_XML_INACTIVE = 2
DOMAIN_TYPES: list[str] = list(typing.get_args(DomainType))  # qemu, kvm (and test, for the test driver)


def make_vm(
    spec: dict[str, Any] | None = None, *, namespace: str = "team-a", name: str = "web", uid: str = UID
) -> VirtualMachine:
    """A VirtualMachine from its wire form; ``spec`` is merged over a minimal kernel-boot spec."""
    base: dict[str, Any] = {"memory": {"size": "512Mi"}, "boot": {"kernel": {"kernel": KERNEL}}}
    return VirtualMachine.model_validate(
        {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"namespace": namespace, "name": name, "uid": uid, "generation": 1},
            "spec": {**base, **(spec or {})},
        }
    )


def build(spec: dict[str, Any] | None = None, *, domain_type: str = "qemu", **kw: Any) -> DomainConfig:
    return domain_for(make_vm(spec, **kw), domain_type=domain_type)


# --- identity ------------------------------------------------------------------------------------


def test_identity_is_the_objects_uid_and_namespaced_name() -> None:
    config = build(namespace="team-a", name="web-0", uid=UID)
    assert config.uuid == UID
    assert config.name == "team-a_web-0" == domain_name("team-a", "web-0")
    assert config.owner == OwnerMetadata(namespace="team-a", name="web-0", uid=UID)


def test_domain_names_of_different_objects_differ() -> None:
    # Neither namespace nor name may contain "_", so the join is unambiguous.
    assert domain_name("a-b", "c") != domain_name("a", "b-c")
    assert domain_name("ns", "a.b") == "ns_a.b"


@pytest.mark.parametrize("domain_type", DOMAIN_TYPES)
def test_domain_type_is_the_hosts(domain_type: str) -> None:
    assert build(domain_type=domain_type).domain_type == domain_type


def test_minimal_spec_defaults() -> None:
    config = build()
    assert config == DomainConfig(
        name="team-a_web",
        uuid=UID,
        owner=OwnerMetadata("team-a", "web", UID),
        domain_type="qemu",
        memory_kib=512 * 1024,
        current_memory_kib=512 * 1024,
        vcpus=1,
        cpu=CpuConfig(),
        os=OsConfig(kernel=KERNEL),
        serial=SerialConsoleConfig(log_file=f"{CONSOLE_LOG_DIR}/team-a_web.console.log"),
        graphics=None,
        cputune=None,
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )


# --- memory --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "max_kib", "current_kib"),
    [
        ({"size": "512Mi"}, 524288, 524288),
        ({"size": "2Gi"}, 2097152, 2097152),
        ({"size": "1.5Gi"}, 1572864, 1572864),
        ({"size": "1G"}, 976562, 976562),  # decimal: 10^9 bytes, whole KiB
        ({"size": 268435456}, 262144, 262144),  # plain bytes
        ({"size": "512Mi", "max": "2Gi"}, 2097152, 524288),
        ({"size": "1Gi", "max": "1Gi"}, 1048576, 1048576),
        ({"size": "1024Mi", "max": "4G"}, 3906250, 1048576),
    ],
)
def test_memory_in_kib_from_quantities(memory: dict[str, Any], max_kib: int, current_kib: int) -> None:
    config = build({"memory": memory})
    assert (config.memory_kib, config.current_memory_kib) == (max_kib, current_kib)


# --- CPU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "expected_vcpus", "expected"),
    [
        ({}, 1, CpuConfig()),
        ({"count": 4}, 4, CpuConfig()),
        (
            {"count": 4, "topology": {"sockets": 2, "cores": 2, "threads": 1}},
            4,
            CpuConfig(sockets=2, cores=2, threads=1),
        ),
        (
            {"count": 8, "topology": {"sockets": 1, "cores": 4, "threads": 2}},
            8,
            CpuConfig(sockets=1, cores=4, threads=2),
        ),
        ({"mode": "Default"}, 1, CpuConfig(mode="default")),
        ({"mode": "HostPassthrough"}, 1, CpuConfig(mode="host-passthrough")),
        ({"mode": "HostModel"}, 1, CpuConfig(mode="host-model")),
        ({"mode": "Custom", "model": "Skylake-Server"}, 1, CpuConfig(mode="custom", model="Skylake-Server")),
        (
            {"count": 2, "mode": "HostPassthrough", "topology": {"sockets": 1, "cores": 1, "threads": 2}},
            2,
            CpuConfig(mode="host-passthrough", sockets=1, cores=1, threads=2),
        ),
    ],
)
def test_cpu_count_mode_and_topology(cpu: dict[str, Any], expected_vcpus: int, expected: CpuConfig) -> None:
    config = build({"cpu": cpu})
    assert config.vcpus == expected_vcpus
    assert config.max_vcpus is None
    assert config.cpu == expected


@pytest.mark.parametrize("mode", ["Default", "HostPassthrough", "HostModel"])
def test_a_model_with_a_non_custom_mode_is_ignored_or_refused_as_unsupported(mode: str) -> None:
    vm = make_vm({"cpu": {"mode": mode, "model": "Skylake-Server"}})
    try:
        config = domain_for(vm, domain_type="qemu")
    except UnsupportedSpec:
        return
    assert config.cpu.model is None


# --- firmware, kernel boot, console, display -------------------------------------------------------


@pytest.mark.parametrize(("firmware", "expected"), [("BIOS", "bios"), ("UEFI", "efi")])
def test_firmware(firmware: str, expected: str) -> None:
    assert build({"firmware": firmware}).os.firmware == expected


def test_kernel_boot_is_passed_through() -> None:
    config = build({"boot": {"kernel": {"kernel": KERNEL, "initrd": INITRD, "cmdline": "console=ttyS0 quiet"}}})
    assert config.os == OsConfig(kernel=KERNEL, initrd=INITRD, cmdline="console=ttyS0 quiet")
    assert config.os.machine == "q35"
    assert config.os.boot_devices == ()


ALLOWED = ("/var/lib/libvirt/boot/vdc-tiny", "/srv/kernels")


def test_a_kernel_boot_domain_carries_the_hosts_allowed_directories_for_the_hook() -> None:
    config = domain_for(make_vm(), domain_type="qemu", host_file_dirs=list(ALLOWED))
    assert config.owner == OwnerMetadata(namespace="team-a", name="web", uid=UID, host_file_dirs=ALLOWED)
    assert 'path="/var/lib/libvirt/boot/vdc-tiny"' in config.to_string()


def test_a_domain_without_host_files_carries_no_directories() -> None:
    vm = make_vm({"boot": {}, "disks": [{"name": "root", "source": {"blank": {"pool": "p", "size": "1Gi"}}}]})
    config = domain_for(
        vm, domain_type="qemu", volumes={"root": AttachedVolume("/p/root.qcow2", "qcow2")}, host_file_dirs=ALLOWED
    )
    assert config.owner.host_file_dirs == ()
    assert "hostFiles" not in config.to_string()


@pytest.mark.parametrize(
    ("console", "expected"),
    [
        ({}, SerialConsoleConfig(log_file="/var/log/libvirt/qemu/team-a_web.console.log")),
        ({"serial": True, "log": True}, SerialConsoleConfig(log_file="/var/log/libvirt/qemu/team-a_web.console.log")),
        ({"serial": True, "log": False}, SerialConsoleConfig(log_file=None)),
        ({"serial": False}, None),
        ({"serial": False, "log": True}, None),
    ],
)
def test_serial_console_and_its_log(console: dict[str, Any], expected: SerialConsoleConfig | None) -> None:
    assert build({"console": console}).serial == expected


@pytest.mark.parametrize(
    ("graphics", "expected"),
    [
        ({}, None),
        ({"type": "None"}, None),
        ({"type": "VNC"}, GraphicsConfig(type="vnc", listen="127.0.0.1")),
        ({"type": "VNC", "listen": "0.0.0.0"}, GraphicsConfig(type="vnc", listen="0.0.0.0")),
        ({"type": "None", "listen": "0.0.0.0"}, None),
    ],
)
def test_vnc(graphics: dict[str, Any], expected: GraphicsConfig | None) -> None:
    assert build({"graphics": graphics}).graphics == expected


@pytest.mark.parametrize(
    ("availability", "expected"),
    [
        ({}, None),
        ({"watchdog": False, "vmMonitoring": "Reset"}, None),
        ({"watchdog": True}, WatchdogConfig(model="i6300esb", action="pause")),
    ],
)
def test_a_watchdog_pauses_the_guest_for_vm_monitoring(
    availability: dict[str, Any], expected: WatchdogConfig | None
) -> None:
    assert build({"availability": availability}).watchdog == expected


def test_adding_a_watchdog_to_a_running_guest_needs_a_restart() -> None:
    running = build()
    desired = build({"availability": {"watchdog": True}})
    assert differing_fields(running, desired) == ("watchdog",)
    assert differing_fields(build({"availability": {"vmMonitoring": "Reset"}}), running) == ()


# --- QoS -----------------------------------------------------------------------------------------


def limited(quota: int, shares: int | None = None) -> CpuTuneConfig:
    return CpuTuneConfig(shares=shares, global_period=CPU_PERIOD_US, global_quota=quota)


@pytest.mark.parametrize(
    ("count", "qos", "expected"),
    [
        (1, None, None),
        (1, {}, None),
        (1, {"cpuShares": 2048}, CpuTuneConfig(shares=2048)),
        # The limit is for the whole VM: the domain cgroup's quota over a 100 ms period, whatever the vCPUs.
        (1, {"cpuLimit": 500}, limited(50_000)),
        (2, {"cpuLimit": 1500}, limited(150_000)),
        (4, {"cpu": {"limit": "2"}}, limited(200_000)),
        (1, {"cpu": {"limit": "250m"}}, limited(25_000)),
        (3, {"cpu": {"limit": "1.5"}}, limited(150_000)),
        # libvirt's smallest quota is 1 ms per period.
        (1, {"cpuLimit": 10}, limited(1000)),
        (2, {"cpuShares": 512, "cpuLimit": 1000}, limited(100_000, shares=512)),
        # Share levels are per vCPU (Normal is the kernel's default of 1,024); a number is the whole VM's.
        (1, {"cpu": {"shares": "Normal"}}, CpuTuneConfig(shares=1024)),
        (2, {"cpu": {"shares": "High"}}, CpuTuneConfig(shares=4096)),
        (4, {"cpu": {"shares": "Low"}}, CpuTuneConfig(shares=2048)),
        (4, {"cpu": {"shares": 300}}, CpuTuneConfig(shares=300)),
        # A reservation is placement's and nothing on the domain.
        (1, {"cpu": {"reservation": "500m"}}, None),
    ],
)
def test_cputune_from_qos(count: int, qos: dict[str, Any] | None, expected: CpuTuneConfig | None) -> None:
    spec: dict[str, Any] = {"cpu": {"count": count}}
    if qos is not None:
        spec["qos"] = qos
    assert build(spec).cputune == expected


@pytest.mark.parametrize(
    ("qos", "expected"),
    [
        ({"cpu": {"shares": "High"}}, None),
        ({"memory": {"reservation": "512Mi"}}, MemTuneConfig(soft_limit=512 * 1024)),
        ({"memory": {"limit": "3Gi"}}, MemTuneConfig(hard_limit=3 * 1024 * 1024)),
        ({"memory": {"reservation": "1Gi", "limit": "3Gi"}}, MemTuneConfig(hard_limit=3 * 1024**2, soft_limit=1024**2)),
        # Rounded up to whole KiB, as libvirt keeps them.
        ({"memory": {"reservation": "1000001"}}, MemTuneConfig(soft_limit=977)),
    ],
)
def test_memtune_from_qos(qos: dict[str, Any], expected: MemTuneConfig | None) -> None:
    assert build({"qos": qos}).memtune == expected


@given(count=st.integers(1, 64), limit=st.integers(10, 1_000_000))
def test_cpu_limit_is_the_whole_vms_and_respects_libvirts_minimum(count: int, limit: int) -> None:
    tune = build({"cpu": {"count": count}, "qos": {"cpu": {"limit": f"{limit}m"}}}).cputune
    assert tune is not None
    assert (tune.global_period, tune.period, tune.quota) == (CPU_PERIOD_US, None, None)
    assert tune.global_quota == max(1000, limit * CPU_PERIOD_US // 1000)


# --- not supported yet ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"disks": [{"name": "root", "source": {"blank": {"pool": "default", "size": "1Gi"}}}]}, "no volume yet"),
        ({"interfaces": [{"name": "eth0", "switch": "lan"}]}, "interfaces"),
        ({"boot": {}}, "kernel"),
    ],
)
def test_what_is_not_built_yet_is_unsupported_with_a_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedSpec, match=message):
        build(spec)


def test_disks_become_devices_in_spec_order_with_their_volumes() -> None:
    vm = make_vm(
        {
            "disks": [
                {"name": "root", "source": {"blank": {"pool": "p", "size": "1Gi"}}, "bootOrder": 1},
                {"name": "seed", "source": {"cloudInit": {"pool": "p"}}},
                {"name": "data", "source": {"volume": {"pool": "p", "name": "d.raw"}}, "bus": "sata", "readOnly": True},
            ],
            "boot": {},
            "cloudInit": {"userData": "#cloud-config"},
        }
    )
    config = domain_for(
        vm,
        domain_type="qemu",
        volumes={
            "root": AttachedVolume("/p/root.qcow2", "qcow2"),
            "seed": AttachedVolume("/p/seed.iso", "iso"),
            "data": AttachedVolume("/p/d.raw", "raw"),
        },
    )
    by_path = {d.source_file: d for d in config.disks}
    assert (by_path["/p/root.qcow2"].target_dev, by_path["/p/root.qcow2"].driver_type) == ("vda", "qcow2")
    assert by_path["/p/root.qcow2"].boot_order == 1 and config.os.boot_devices == ()
    seed = by_path["/p/seed.iso"]
    assert (seed.device, seed.bus, seed.readonly, seed.target_dev) == ("cdrom", "sata", True, "sda")
    data = by_path["/p/d.raw"]
    assert (data.bus, data.target_dev, data.readonly) == ("sata", "sdb", True)
    config.to_string()


def test_unsupported_spec_is_a_value_error() -> None:
    assert issubclass(UnsupportedSpec, ValueError)


# --- every produced config: libvirt's schema and libvirt's test driver ----------------------------

VARIED_SPECS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "example-tiny": {
        "runStrategy": "Always",
        "cpu": {"count": 1},
        "memory": {"size": "128Mi"},
        "boot": {"kernel": {"kernel": KERNEL, "initrd": INITRD, "cmdline": "console=ttyS0 vdc.marker=hello"}},
    },
    "uefi-vnc-qos": {
        "cpu": {"count": 4, "mode": "HostPassthrough", "topology": {"sockets": 2, "cores": 2, "threads": 1}},
        "memory": {"size": "1Gi", "max": "4Gi"},
        "firmware": "UEFI",
        "graphics": {"type": "VNC", "listen": "0.0.0.0"},
        "qos": {"cpuShares": 4096, "cpuLimit": 2500},
    },
    "custom-model-no-console": {
        "cpu": {"count": 2, "mode": "Custom", "model": "Haswell-noTSX"},
        "memory": {"size": "3G"},
        "console": {"serial": False},
        "boot": {"kernel": {"kernel": KERNEL, "cmdline": "root=/dev/ram0 init=/sbin/init 'quoted' & <odd>"}},
    },
    "host-model-smt": {
        "cpu": {"count": 16, "mode": "HostModel", "topology": {"sockets": 1, "cores": 8, "threads": 2}},
        "memory": {"size": "16Gi", "max": "32Gi"},
        "console": {"serial": True, "log": False},
        "qos": {"cpuLimit": 10},
    },
    "shares-only": {"qos": {"cpuShares": 2}, "memory": {"size": "1Mi"}},
    "halted-big": {
        "runStrategy": "Halted",
        "cpu": {"count": 64, "topology": {"sockets": 4, "cores": 8, "threads": 2}},
        "memory": {"size": "256Gi"},
        "terminationGracePeriodSeconds": 0,
    },
    "watchdog-monitored": {"availability": {"watchdog": True, "vmMonitoring": "Reset"}},
    "unicode-cmdline": {"boot": {"kernel": {"kernel": "/boot/vmlinuz-6.1", "cmdline": "hostname=über-vm ✓"}}},
}


def virt_xml_validate(config: DomainConfig, path: Path) -> None:
    validator = shutil.which("virt-xml-validate")
    if validator is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate/xmllint not installed (Debian: libvirt-clients, libxml2-utils)")
    path.write_text(config.to_string() + "\n")
    result = subprocess.run([validator, str(path), "domain"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"libvirt's domain schema refuses:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def test_driver() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


def define_and_read_back(conn: typing.Any, config: DomainConfig) -> DomainConfig:
    """Define in the test driver, read the inactive XML back, undefine."""
    domain = conn.defineXML(config.to_string())
    try:
        assert domain.UUIDString() == config.uuid
        assert domain.name() == config.name
        return DomainConfig.from_string(domain.XMLDesc(VIR_DOMAIN_XML_INACTIVE))
    finally:
        domain.undefine()


@pytest.mark.parametrize("domain_type", DOMAIN_TYPES)
@pytest.mark.parametrize("name", sorted(VARIED_SPECS))
def test_every_varied_spec_validates_against_libvirts_schema(name: str, domain_type: str, tmp_path: Path) -> None:
    virt_xml_validate(build(VARIED_SPECS[name], domain_type=domain_type), tmp_path / f"{name}.xml")


@pytest.mark.parametrize("domain_type", DOMAIN_TYPES)
@pytest.mark.parametrize("name", sorted(VARIED_SPECS))
def test_every_varied_spec_is_accepted_by_the_test_driver_and_reads_back_unchanged(
    name: str, domain_type: str, test_driver: typing.Any
) -> None:
    config = build(VARIED_SPECS[name], domain_type=domain_type)
    assert differing_fields(define_and_read_back(test_driver, config), config) == ()


def test_the_allowed_directories_survive_a_define(test_driver: typing.Any) -> None:
    config = domain_for(make_vm(VARIED_SPECS["example-tiny"]), domain_type="qemu", host_file_dirs=ALLOWED)
    defined = define_and_read_back(test_driver, config)
    assert defined.owner.host_file_dirs == ALLOWED
    assert differing_fields(defined, config) == ()


def test_a_running_domain_from_domain_for_is_steady_under_the_plan(test_driver: typing.Any) -> None:
    config = build(VARIED_SPECS["uefi-vnc-qos"], uid="3f2b8c1a-9d4e-4f6a-8b7c-00000000beef", name="steady")
    domain = test_driver.defineXML(config.to_string())
    try:
        domain.create()
        observed = observe_domain(test_driver, config.uuid)
        assert observed is not None
        assert observed.state == "running"
        result = plan_vm("Always", config, observed, booted_before=True, shutdown_elapsed=None, grace_seconds=60)
        assert (result.actions, result.phase, result.ready, result.restart_required) == ((), "Running", True, ())
        domain.destroy()
    finally:
        domain.undefine()


# Generated specs: every combination domain_for accepts.

printable = st.text(
    alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters="\x00"),
    min_size=1,
    max_size=40,
)
quantities = st.sampled_from(["1Mi", "64Mi", "128Mi", "500M", "1Gi", "1.5Gi", "3G", "8Gi", 134217728])
bigger = st.sampled_from(["8Gi", "16Gi", "10G"])


@st.composite
def cpu_specs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 32))
    cpu: dict[str, Any] = {"count": count}
    mode = draw(st.sampled_from(["Default", "HostPassthrough", "HostModel", "Custom", None]))
    if mode is not None:
        cpu["mode"] = mode
    if mode == "Custom":
        cpu["model"] = draw(st.sampled_from(["qemu64", "Haswell-noTSX", "Skylake-Server", "EPYC-Rome"]))
    threads = draw(st.sampled_from([t for t in (1, 2, 4, 8) if count % t == 0]))
    cores = draw(st.sampled_from([c for c in range(1, count // threads + 1) if (count // threads) % c == 0]))
    if draw(st.booleans()):
        cpu["topology"] = {"sockets": count // threads // cores, "cores": cores, "threads": threads}
    return cpu


@st.composite
def vm_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"cpu": draw(cpu_specs())}
    size = draw(quantities)
    spec["memory"] = {"size": size, **({"max": draw(bigger)} if draw(st.booleans()) else {})}
    kernel: dict[str, Any] = {"kernel": draw(st.sampled_from([KERNEL, "/boot/vmlinuz-6.1.0-18-cloud-amd64"]))}
    if draw(st.booleans()):
        kernel["initrd"] = INITRD
    if draw(st.booleans()):
        kernel["cmdline"] = draw(printable)
    spec["boot"] = {"kernel": kernel}
    spec["firmware"] = draw(st.sampled_from(["BIOS", "UEFI"]))
    spec["runStrategy"] = draw(st.sampled_from(["Always", "RerunOnFailure", "Manual", "Halted", "Once"]))
    spec["console"] = {"serial": draw(st.booleans()), "log": draw(st.booleans())}
    if draw(st.booleans()):
        spec["graphics"] = {"type": "VNC", "listen": draw(st.sampled_from(["127.0.0.1", "0.0.0.0", "10.1.2.3"]))}
    qos: dict[str, Any] = {}
    if draw(st.booleans()):
        qos["cpuShares"] = draw(st.integers(2, 262144))
    if draw(st.booleans()):
        qos["cpuLimit"] = draw(st.integers(10, 1_000_000))
    empty_qos_too = draw(st.booleans())
    if qos or empty_qos_too:
        spec["qos"] = qos
    return spec


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=vm_specs(), namespace=names, name=names, domain_type=st.sampled_from(DOMAIN_TYPES))
def test_every_generated_config_validates_and_is_accepted_by_libvirt(
    spec: dict[str, Any], namespace: str, name: str, domain_type: str, test_driver: typing.Any
) -> None:
    config = build(spec, namespace=namespace, name=name, domain_type=domain_type)
    with tempfile.TemporaryDirectory() as tmp:
        virt_xml_validate(config, Path(tmp) / "domain.xml")
    assert differing_fields(define_and_read_back(test_driver, config), config) == ()


# Specs that admission lets through but the XML layer refuses: they must become UnsupportedSpec (a
# Stalled condition), never a DomainXmlError that the controller retries forever.


@pytest.mark.parametrize(
    "kernel",
    [
        {"kernel": KERNEL, "cmdline": "console=ttyS0\x1b[31m"},
        {"kernel": "/boot/vmlinuz\x07"},
        {"kernel": KERNEL, "initrd": "/boot/initrd\x1b.img"},
    ],
)
def test_text_xml_cannot_carry_is_unsupported_not_a_crash(kernel: dict[str, Any]) -> None:
    vm = make_vm({"boot": {"kernel": kernel}})
    try:
        config = domain_for(vm, domain_type="qemu")
    except UnsupportedSpec:
        return
    try:
        config.to_string()
    except DomainXmlError as exc:
        pytest.fail(f"admitted spec produced a config that cannot be rendered: {exc}")

"""What of a VM's QoS the host enforces, as status shows it: read back from the running domain's live
definition (which libvirt updates when a tunable is set), never copied from the spec. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vdc.api.common import IOTUNE_LIMITS, Bandwidth, BandwidthLimit, IoBurst, IoTune
from vdc.api.virtualmachine import DiskStatus, InterfaceStatus, QosStatus
from vdc.controllers.vm_plan import cpu_effect, memory_effect
from vdc.libvirt.domain_xml import BandwidthConfig, BandwidthLimitConfig, DomainConfig, IoTuneConfig


def _kib(kib: int | None) -> str | None:
    return None if kib is None else f"{kib}Ki"


def qos_in_force(live: DomainConfig | None) -> QosStatus | None:
    """The CPU and memory tunables of the running domain; None when it does not run or has none set."""
    if live is None or (live.cputune is None and live.memtune is None):
        return None
    shares, whole, per_vcpu = cpu_effect(live.cputune)
    # A per-vCPU quota (domains defined before limits were the whole VM's) caps every vCPU alike.
    limit = whole if whole is not None else None if per_vcpu is None else per_vcpu * live.vcpus
    hard, soft = memory_effect(live.memtune)
    return QosStatus(
        cpu_shares=shares if live.cputune is not None and live.cputune.shares is not None else None,
        cpu_limit=None if limit is None else f"{-(-limit // 1000)}m",
        memory_reservation=_kib(soft),
        memory_limit=_kib(hard),
    )


def _iotune(tune: IoTuneConfig | None) -> IoTune | None:
    if tune is None:
        return None
    peaks = {name: getattr(tune, f"{name}_max") for name in IOTUNE_LIMITS}
    lengths = {getattr(tune, f"{name}_max_length") for name in IOTUNE_LIMITS if peaks[name]}
    burst = IoBurst(**peaks, seconds=max((v for v in lengths if v), default=None)) if any(peaks.values()) else None
    return IoTune(**{name: getattr(tune, name) for name in IOTUNE_LIMITS}, burst=burst)


def disks_in_force(
    disks: Sequence[DiskStatus], live: DomainConfig | None, target_devices: Mapping[str, str]
) -> list[DiskStatus]:
    """Disk status with each disk's I/O limits as the running domain has them (none when it is off)."""
    tunes = {d.target_dev: d.iotune for d in (live.disks if live is not None else ())}
    return [disk.model_copy(update={"iotune": _iotune(tunes.get(target_devices.get(disk.name, "")))}) for disk in disks]


def _limit(limit: BandwidthLimitConfig | None) -> BandwidthLimit | None:
    return None if limit is None else BandwidthLimit(average=limit.average, peak=limit.peak, burst=limit.burst)


def bandwidth_in_force(bandwidth: BandwidthConfig | None) -> Bandwidth | None:
    if bandwidth is None:
        return None
    return Bandwidth(inbound=_limit(bandwidth.inbound), outbound=_limit(bandwidth.outbound))


def interfaces_in_force(nics: Sequence[InterfaceStatus], live: DomainConfig | None) -> list[InterfaceStatus]:
    """NIC status with each NIC's bandwidth as the running domain has it (none when it is off)."""
    found = {i.mac: i.bandwidth for i in (live.interfaces if live is not None else ())}
    return [nic.model_copy(update={"bandwidth": bandwidth_in_force(found.get(nic.mac_address or ""))}) for nic in nics]

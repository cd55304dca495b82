"""Measured demand of VMs and hosts (for DRS and the demand metrics), from the stats refreshes.

A VM's CPU demand is the rate of its domain's ``cpu.time``: the counter's delta over the wall-clock
delta between two readings of its host, in cores, smoothed exponentially with a half-life (a reading
``dt`` seconds after the previous one moves the value ``1 - 0.5 ** (dt / half_life)`` of the way to the
new rate; the first rate of a VM is taken as it is). Its memory demand is the balloon's current size.

Pure and deterministic given the readings' times (monotonic seconds). Keyed by the VM's uid, so a VM
keeps its smoothed value when it moves: a live migration's target QEMU starts its ``cpu.time`` afresh,
so a VM seen on another host (or whose counter went backwards: restarted, or a VM that was not running
at its host's previous reading) takes a new baseline and its next delta is measured from there.

Only running VMs that report ``cpu.time`` are tracked. A VM that its host's latest reading does not show
running (stopped, paused, gone, or moved and not yet seen on the target) no longer counts in the
snapshot or its host's sum, but its smoothed value is kept until it has not been seen for
``forget_after_seconds``, so a migration keeps it whichever host is read first.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from vdc.metrics.vmstats import VmStats

__all__ = ["DemandTracker", "VmDemand"]


@dataclass(frozen=True)
class VmDemand:
    uid: str
    namespace: str
    name: str
    host: str
    cpu_cores: float
    """Smoothed CPU demand in cores: ``cpu.time`` delta / wall-clock delta, exponentially smoothed."""
    memory_bytes: int | None
    """The balloon's current size (``VmStats.memory_bytes``) when reported, else None."""
    samples: int
    """How many deltas went into ``cpu_cores`` (0: only one reading so far, and ``cpu_cores`` is 0.0)."""


@dataclass
class _Track:
    """What the tracker holds of one VM (changed only under the tracker's lock)."""

    namespace: str
    name: str
    host: str
    cpu_seconds: float
    """The baseline: ``cpu.time`` at ``at``."""
    at: float
    cpu_cores: float = 0.0
    memory_bytes: int | None = None
    samples: int = 0
    current: bool = True
    """Running in its host's latest reading."""

    def demand(self, uid: str) -> VmDemand:
        return VmDemand(uid, self.namespace, self.name, self.host, self.cpu_cores, self.memory_bytes, self.samples)


class DemandTracker:
    """Per-VM demand from the hosts' stats readings. ``observe`` may be called from worker threads (one
    per host at once); the reads (``vm``, ``snapshot``, ``host_cpu_cores``) from any thread: they read
    an immutable snapshot that ``observe`` replaces."""

    def __init__(self, half_life_seconds: float = 60.0, *, forget_after_seconds: float = 600.0) -> None:
        if not half_life_seconds > 0:
            raise ValueError(f"half-life must be more than 0 seconds, not {half_life_seconds!r}")
        if not forget_after_seconds > 0:
            raise ValueError(f"forget-after must be more than 0 seconds, not {forget_after_seconds!r}")
        self.half_life = float(half_life_seconds)
        self.forget_after = float(forget_after_seconds)
        self._lock = threading.Lock()
        self._tracks: dict[str, _Track] = {}
        self._snapshot: Mapping[str, VmDemand] = MappingProxyType({})

    def observe(self, host: str, stats: Sequence[VmStats], at: float) -> None:
        """One host's readings (from one getAllDomainStats round) at monotonic time `at`."""
        with self._lock:
            seen = set()
            for vm in stats:
                if not vm.running or vm.cpu_seconds is None:
                    continue
                seen.add(vm.uid)
                self._observe_vm(host, vm, vm.cpu_seconds, at)
            for uid, track in list(self._tracks.items()):
                if track.host == host and uid not in seen:
                    track.current = False  # not running here any more: stopped, paused, gone or moved
                if at - track.at > self.forget_after:
                    del self._tracks[uid]
            self._snapshot = MappingProxyType(
                {uid: track.demand(uid) for uid, track in self._tracks.items() if track.current}
            )

    def _observe_vm(self, host: str, vm: VmStats, cpu_seconds: float, at: float) -> None:
        track = self._tracks.get(vm.uid)
        if track is None:
            self._tracks[vm.uid] = _Track(vm.namespace, vm.name, host, cpu_seconds, at, memory_bytes=vm.memory_bytes)
            return
        track.namespace, track.name, track.memory_bytes = vm.namespace, vm.name, vm.memory_bytes
        if track.host != host or cpu_seconds < track.cpu_seconds or not track.current:
            # A new QEMU (migrated, restarted) or a gap in what we saw: a new baseline, the value kept.
            track.host, track.cpu_seconds, track.at, track.current = host, cpu_seconds, at, True
            return
        dt = at - track.at
        if dt <= 0:
            return  # the same moment twice: nothing to measure
        rate = (cpu_seconds - track.cpu_seconds) / dt
        if track.samples == 0:
            track.cpu_cores = rate
        else:
            alpha = 1.0 - 0.5 ** (dt / self.half_life)
            track.cpu_cores += alpha * (rate - track.cpu_cores)
        track.samples += 1
        track.cpu_seconds, track.at = cpu_seconds, at

    def vm(self, uid: str) -> VmDemand | None:
        return self._snapshot.get(uid)

    def snapshot(self) -> Mapping[str, VmDemand]:
        """Every counted VM's demand by uid: an immutable copy, safe to read from another thread."""
        return self._snapshot

    def host_cpu_cores(self, host: str) -> float:
        """The sum of the CPU demand of the VMs last seen running on ``host``."""
        return sum(d.cpu_cores for d in self._snapshot.values() if d.host == host)

"""Python's cyclic garbage collector set for a process that keeps many objects for long (its caches).

Measured on the scale benchmark (1,000 VMs on 10 test-driver hosts, ``bench/README.md``): with
CPython's defaults the collector took 1.1 to 1.4 s of the operator's CPU during the rollout, most of
it in full collections that walked every module, class and schema imported at start (about 100,000
objects) and every cached body, again and again as the caches grew. Freezing what exists once the
operator has started moves those objects out of the collector's sight (they live as long as the
process anyway), and a larger first generation makes collections rarer: 0.5-0.6 s in the same runs.

Most garbage here has no reference cycles (parsed JSON, XML trees, dataclasses) and is freed by
reference counting at once; the collector is only for cycles (exceptions with their tracebacks,
asyncio tasks), which still get collected, only less often."""

from __future__ import annotations

import gc

__all__ = ["FIRST_GENERATION_THRESHOLD", "tune_gc"]

FIRST_GENERATION_THRESHOLD = 10_000
"""Allocations (less deallocations) of container objects between two young collections (CPython: 700)."""


def tune_gc() -> None:
    """Freeze every object the started operator holds and make young collections rarer. Call it once,
    when start-up is over (the modules imported, the caches primed)."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)

"""vdc.gc_tuning: what exists at start-up is frozen, young collections are rarer, cycles are still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from vdc.gc_tuning import FIRST_GENERATION_THRESHOLD


def _run(code: str) -> str:
    """In a fresh interpreter: freezing changes the whole process, not something to do to pytest's."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_tune_gc_freezes_what_exists_and_raises_the_first_threshold() -> None:
    out = _run(
        """
        import gc
        from vdc.gc_tuning import tune_gc
        before = gc.get_freeze_count()
        tune_gc()
        print(before, gc.get_freeze_count(), gc.get_threshold()[0])
        """
    )
    before, after, threshold = (int(v) for v in out.split())
    assert before == 0
    assert after > 1000  # every module, class and function imported so far
    assert threshold == FIRST_GENERATION_THRESHOLD


def test_cycles_made_after_tuning_are_still_collected() -> None:
    out = _run(
        """
        import gc, weakref
        from vdc.gc_tuning import tune_gc
        tune_gc()
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(gone() is None)
        """
    )
    assert out == "True"

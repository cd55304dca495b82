"""Run the real checks: the Argo CD health Lua (with lupa's Lua 5.1, the dialect of Argo CD's
gopher-lua) and kstatus (the Go binary hack/build-kstatus.sh builds from sigs.k8s.io/cli-utils)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lupa.lua51 import LuaRuntime

import rig
from vdc import gitops

HEALTH_DIR = rig.REPO / gitops.HEALTH_DIR
GROUP = "vdc.dev"


def health_script(kind: str, group: str = GROUP) -> Path:
    return HEALTH_DIR / group / kind / "health.lua"


def argo_health(body: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """(hs.status, hs.message) of the kind's health.lua for ``body``, run the way Argo CD does: a
    fresh Lua state, the object as the global ``obj``, the chunk's return value is the result."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(body, recursive=True)
    text = script if script is not None else health_script(body["kind"]).read_text()
    result = lua.execute(text)
    return str(result["status"]), str(result["message"] or "")


def kstatus_binary() -> Path:
    """The cached kstatus binary. Missing is an error, not a skip: `make bootstrap` builds it."""
    path = Path(
        subprocess.run(
            [str(rig.HACK / "build-kstatus.sh"), "--path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not path.is_file():
        raise AssertionError(f"{path} is missing: run hack/build-kstatus.sh (make bootstrap builds it)")
    return path


def kstatus_stream(stream: str) -> list[dict[str, str]]:
    """The binary's JSON lines for a YAML or JSON stream on its stdin."""
    result = subprocess.run([str(kstatus_binary())], input=stream, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def kstatus(bodies: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """kstatus's verdict for each body, in order (one run of the binary for all of them)."""
    lines = kstatus_stream("".join(json.dumps(b) + "\n" for b in bodies))
    assert len(lines) == len(bodies), lines
    return lines

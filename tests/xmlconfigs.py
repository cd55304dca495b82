"""Test support shared by the libvirt XML modules' tests (virt-manager's ideas): validate against
libvirt's own RNG schemas, and find config fields that no golden config ever sets."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

UPDATE_GOLDEN = os.environ.get("VDC_UPDATE_GOLDEN") == "1"


def check_golden(golden_dir: Path, name: str, text: str) -> None:
    """``text`` equals ``golden_dir/name.xml`` (``VDC_UPDATE_GOLDEN=1`` rewrites the file first)."""
    path = golden_dir / f"{name}.xml"
    if UPDATE_GOLDEN:
        golden_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with VDC_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path} differs from the generated XML (VDC_UPDATE_GOLDEN=1 rewrites it)"


def stale_golden_files(golden_dir: Path, names: Iterable[str]) -> list[str]:
    """Golden files that no config produces any more."""
    known = set(names)
    return sorted(p.stem for p in golden_dir.glob("*.xml") if p.stem not in known)


def virt_xml_validate(path: Path, schema: str) -> None:
    """Fail unless libvirt's ``schema`` (domain, network, storagepool …) accepts the file."""
    validator = shutil.which("virt-xml-validate")
    if validator is None:
        pytest.skip("virt-xml-validate not installed (Debian: libvirt-clients; it needs xmllint from libxml2-utils)")
    if shutil.which("xmllint") is None:
        pytest.skip("xmllint not installed (Debian: libxml2-utils); virt-xml-validate needs it")
    result = subprocess.run([validator, str(path), schema], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"libvirt's {schema} schema refuses {path.name}:\n{result.stdout}{result.stderr}"


def config_classes(cls: type) -> set[type]:
    """``cls`` and every dataclass reachable through its fields' types."""
    found = {cls}
    for field in dataclasses.fields(cls):
        for arg in _type_leaves(typing.get_type_hints(cls)[field.name]):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type) and arg not in found:
                found |= config_classes(arg)
    return found


def _type_leaves(hint: typing.Any) -> Iterator[typing.Any]:
    args = typing.get_args(hint)
    if args and (typing.get_origin(hint) in (typing.Union, types.UnionType, tuple)):
        for arg in args:
            yield from _type_leaves(arg)
    else:
        yield hint


def instances(obj: object) -> Iterator[object]:
    """Every dataclass instance inside ``obj``, ``obj`` included."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield obj
        for field in dataclasses.fields(obj):
            yield from instances(getattr(obj, field.name))
    elif isinstance(obj, tuple):
        for item in obj:
            yield from instances(item)


def _default(field: dataclasses.Field[typing.Any]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def unexercised_fields(roots: Iterable[type], configs: Iterable[object]) -> list[str]:
    """Classes never used and fields never set to a non-default value by ``configs``."""
    seen: dict[type, list[object]] = {}
    for config in configs:
        for obj in instances(config):
            seen.setdefault(type(obj), []).append(obj)
    classes: set[type] = set()
    for root in roots:
        classes |= config_classes(root)
    missing = []
    for cls in sorted(classes, key=lambda c: c.__name__):
        objs = seen.get(cls, [])
        if not objs:
            missing.append(f"{cls.__name__} (never used)")
            continue
        for field in dataclasses.fields(cls):
            default = _default(field)
            if default is dataclasses.MISSING:
                continue  # required: every instance gives it a value
            if all(getattr(o, field.name) == default for o in objs):
                missing.append(f"{cls.__name__}.{field.name}")
    return missing

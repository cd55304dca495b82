"""Fixtures for the OVF library tests: the sample descriptors and a tar builder for hostile OVAs."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parent / "samples"

# A member: (name, data) for a regular file, or a ready TarInfo (links, devices …) with no data.
Member = tuple[str, bytes] | tarfile.TarInfo
TarBuilder = Callable[[list[Member]], Path]


def minimal_descriptor(files: dict[str, int], *, file_attrs: str = "") -> bytes:
    """One system, one disk per file (capacity 1 GiB), sizes as given."""
    refs = "".join(
        f'<File ovf:id="f{i}" ovf:href="{n}" ovf:size="{s}" {file_attrs}/>' for i, (n, s) in enumerate(files.items())
    )
    disks = "".join(
        f'<Disk ovf:diskId="d{i}" ovf:fileRef="f{i}" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30" '
        f'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>'
        for i in range(len(files))
    )
    items = "".join(
        f"<Item><rasd:HostResource>ovf:/disk/d{i}</rasd:HostResource><rasd:InstanceID>{10 + i}</rasd:InstanceID>"
        f"<rasd:ResourceType>17</rasd:ResourceType></Item>"
        for i in range(len(files))
    )
    return (
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
        'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">'
        f"<References>{refs}</References><DiskSection><Info>d</Info>{disks}</DiskSection>"
        '<VirtualSystem ovf:id="vm"><Info>vm</Info><VirtualHardwareSection><Info>hw</Info>'
        "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>"
        "<rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>"
        f"{items}</VirtualHardwareSection></VirtualSystem></Envelope>"
    ).encode()


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def make_tar(tmp_path: Path) -> TarBuilder:
    """Write a tar of the members, in order, to a new file under tmp_path and return its path."""
    counter = iter(range(1_000_000))

    def build(members: list[Member]) -> Path:
        path = tmp_path / f"package{next(counter)}.ova"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for member in members:
                if isinstance(member, tarfile.TarInfo):
                    tar.addfile(member)
                else:
                    name, data = member
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return path

    return build

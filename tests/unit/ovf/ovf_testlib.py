"""Helpers shared by the OVF tests (imported by name: the tests directory is on sys.path)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

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

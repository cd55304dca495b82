"""The OVF environment document (DSP0243 section 11): ``ovf-env.xml``, what a deployed guest reads its
property values from, and the ISO transport that carries it (a CD-ROM with ``ovf-env.xml`` at its root,
as VMware's ``iso`` transport does). Pure: bytes in, bytes out."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import pycdlib

ENV_NS = "http://schemas.dmtf.org/ovf/environment/1"
ISO_VOLUME_ID = "OVF_ENV"
ENV_FILE = "ovf-env.xml"

ET.register_namespace("oe", ENV_NS)


def environment_xml(system_id: str, properties: Mapping[str, str], platform: Mapping[str, str] | None = None) -> bytes:
    """``<Environment oe:id=…>`` with a PlatformSection and one ``<Property oe:key oe:value/>`` per value."""
    root = ET.Element(f"{{{ENV_NS}}}Environment", {f"{{{ENV_NS}}}id": system_id})
    if platform:
        section = ET.SubElement(root, f"{{{ENV_NS}}}PlatformSection")
        for tag in ("Kind", "Version", "Vendor", "Locale"):
            if tag in platform:
                ET.SubElement(section, f"{{{ENV_NS}}}{tag}").text = platform[tag]
    props = ET.SubElement(root, f"{{{ENV_NS}}}PropertySection")
    for key in sorted(properties):
        ET.SubElement(props, f"{{{ENV_NS}}}Property", {f"{{{ENV_NS}}}key": key, f"{{{ENV_NS}}}value": properties[key]})
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def read_environment(data: bytes) -> dict[str, str]:
    """The property values of an environment document (what a guest would read)."""
    root = ET.fromstring(data)
    return {
        str(p.get(f"{{{ENV_NS}}}key")): str(p.get(f"{{{ENV_NS}}}value", "")) for p in root.iter(f"{{{ENV_NS}}}Property")
    }


def environment_iso(document: bytes) -> bytes:
    """An ISO 9660 image (with Joliet and Rock Ridge names) holding ``ovf-env.xml`` at its root."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=ISO_VOLUME_ID, app_ident_str="vdc-operator", joliet=3, rock_ridge="1.09")
    try:
        iso.add_fp(io.BytesIO(document), len(document), iso_path="/OVF_ENV.XML;1", rr_name=ENV_FILE,
                   joliet_path=f"/{ENV_FILE}")  # fmt: skip
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_environment_iso(data: bytes) -> bytes:
    """The ``ovf-env.xml`` of an environment ISO."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{ENV_FILE}")
        return out.getvalue()
    finally:
        iso.close()

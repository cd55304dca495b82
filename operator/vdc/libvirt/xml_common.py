"""What the libvirt XML modules share: the ElementTree helpers and the elements domains and networks both
have (``<bandwidth>``), in the style of :mod:`vdc.libvirt.domain_xml` (one small frozen dataclass per
element, to and from XML, no policy, no I/O).

The helpers build elements with only the attributes that are set, refuse what XML cannot carry, and
read back with errors that say where. Each XML module binds them to its own exception class, a subclass
of :class:`XmlError` (``XmlHelpers(DomainXmlError)``), so callers keep catching the error of the module
they use; an element defined here raises :class:`XmlError` itself, and a module reading one inside its
own XML (:meth:`XmlHelpers.read`) turns that into its own error.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Self, TypeVar

_S = TypeVar("_S", bound=str)
_T = TypeVar("_T")
_ILLEGAL_XML_CHARS = re.compile("[^\t\n\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Attrs = dict[str, str | int | None]


BANDWIDTH_MAX = 2**32 - 1
"""libvirt's bandwidth ``average``/``peak``/``burst``: unsigned 32-bit, at least 1 (0 means no limit)."""


class XmlError(ValueError):
    """The XML is not an element we can read, or a config cannot be expressed in libvirt XML."""


class XmlHelpers:
    def __init__(self, error: type[XmlError]) -> None:
        self.error = error

    def read(self, parse: Callable[[ET.Element], _T], el: ET.Element) -> _T:
        """``parse(el)`` for a shared element inside this module's XML: its errors become this module's."""
        try:
            return parse(el)
        except XmlError as exc:
            if isinstance(exc, self.error):
                raise
            raise self.error(str(exc)) from None

    def safe(self, value: str, what: str) -> str:
        """``value`` unless it holds a character XML 1.0 cannot represent."""
        bad = _ILLEGAL_XML_CHARS.search(value)
        if bad:
            raise self.error(f"{what}: character {bad.group()!r} cannot be represented in XML")
        return value

    def new(self, tag: str, attrs: Attrs | None = None, text: str | int | None = None) -> ET.Element:
        """``<tag>``; attributes whose value is None are left out."""
        el = ET.Element(tag)
        for key, value in (attrs or {}).items():
            if value is not None:
                el.set(key, self.safe(str(value), f"<{tag} {key}>"))
        if text is not None:
            el.text = self.safe(str(text), f"<{tag}>")
        return el

    def sub(
        self, parent: ET.Element, tag: str, attrs: Attrs | None = None, text: str | int | None = None
    ) -> ET.Element:
        """Append ``<tag>`` to ``parent``; attributes whose value is None are left out."""
        el = self.new(tag, attrs, text)
        parent.append(el)
        return el

    def pick(self, value: str | None, options: tuple[_S, ...], what: str) -> _S:
        for option in options:
            if option == value:
                return option
        raise self.error(f"{what}: {value!r} is not one of {', '.join(options)}")

    def integer(self, value: str | None, what: str) -> int:
        if value is None:
            raise self.error(f"{what} is missing")
        try:
            return int(value.strip())
        except ValueError:
            raise self.error(f"{what}: {value!r} is not an integer") from None

    def opt_integer(self, value: str | None, what: str) -> int | None:
        return None if value is None else self.integer(value, what)

    def attr(self, el: ET.Element, name: str) -> str:
        value = el.get(name)
        if value is None:
            raise self.error(f"<{el.tag}> has no {name} attribute")
        return value

    def child(self, el: ET.Element, tag: str) -> ET.Element:
        found = el.find(tag)
        if found is None:
            raise self.error(f"<{el.tag}> has no <{tag}>")
        return found

    @staticmethod
    def text(el: ET.Element | None) -> str | None:
        """The element's text ("" when empty), None when there is no element."""
        if el is None:
            return None
        return el.text or ""

    def expect_tag(self, el: ET.Element, tag: str) -> None:
        if el.tag != tag:
            raise self.error(f"expected <{tag}>, got <{el.tag}>")

    def parse(self, text: str) -> ET.Element:
        try:
            return ET.fromstring(text)
        except ET.ParseError as e:
            raise self.error(f"not well-formed XML: {e}") from None

    @staticmethod
    def to_string(root: ET.Element) -> str:
        """The element, indented two spaces, without a trailing newline."""
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode")

    def check_uuid(self, value: str | None, what: str) -> None:
        """None, or a UUID in the canonical lowercase form libvirt writes back."""
        if value is None:
            return
        try:
            canonical = str(uuid.UUID(value))
        except ValueError:
            raise self.error(f"{what} {value!r} is not a UUID") from None
        if canonical != value:
            raise self.error(f"{what} {value!r} must be in canonical form {canonical!r}")


_xml = XmlHelpers(XmlError)


# --- bandwidth (a domain's interface, a network) -------------------------------------------------


@dataclass(frozen=True)
class BandwidthLimitConfig:
    """``<inbound>``/``<outbound>``: average and peak in KiB/s, burst in KiB (each 1 to 2^32-1)."""

    average: int
    peak: int | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        for name in ("average", "peak", "burst"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= BANDWIDTH_MAX:
                raise XmlError(f"bandwidth {name} must be 1-{BANDWIDTH_MAX} (use None for no limit), got {value}")

    def to_xml(self, tag: Literal["inbound", "outbound"] = "inbound") -> ET.Element:
        return _xml.new(tag, {"average": self.average, "peak": self.peak, "burst": self.burst})

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        return cls(
            average=_xml.integer(el.get("average"), f"bandwidth {el.tag} average"),
            peak=_xml.opt_integer(el.get("peak"), f"bandwidth {el.tag} peak"),
            burst=_xml.opt_integer(el.get("burst"), f"bandwidth {el.tag} burst"),
        )


@dataclass(frozen=True)
class BandwidthConfig:
    """``<bandwidth>``: inbound and outbound limits, at least one. On an interface inbound is traffic
    towards the guest; on a network it is traffic into the network (towards the guests), shaped on its
    bridge.

    libvirt shapes with ``tc`` (htb classes with sfq leaves, an ingress policer): on a host whose kernel
    lacks one of those queueing disciplines the interface or network fails to start.
    """

    inbound: BandwidthLimitConfig | None = None
    outbound: BandwidthLimitConfig | None = None

    def __post_init__(self) -> None:
        if self.inbound is None and self.outbound is None:
            raise XmlError("bandwidth needs inbound or outbound (use None for no limits)")

    def to_xml(self) -> ET.Element:
        el = _xml.new("bandwidth")
        if self.inbound is not None:
            el.append(self.inbound.to_xml("inbound"))
        if self.outbound is not None:
            el.append(self.outbound.to_xml("outbound"))
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self | None:
        """None when neither direction is limited."""
        _xml.expect_tag(el, "bandwidth")
        inbound, outbound = el.find("inbound"), el.find("outbound")
        if inbound is None and outbound is None:
            return None
        return cls(
            inbound=None if inbound is None else BandwidthLimitConfig.from_xml(inbound),
            outbound=None if outbound is None else BandwidthLimitConfig.from_xml(outbound),
        )


__all__ = ["BANDWIDTH_MAX", "BandwidthConfig", "BandwidthLimitConfig", "XmlError", "XmlHelpers"]

"""The small ElementTree helpers every libvirt XML module uses: build elements with only the
attributes that are set, refuse what XML cannot carry, and read back with errors that say where.

Each XML module binds them to its own exception class (``XmlHelpers(DomainXmlError)``), so callers
keep catching the error of the module they use.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from typing import TypeVar

_S = TypeVar("_S", bound=str)
_ILLEGAL_XML_CHARS = re.compile("[^\t\n\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Attrs = dict[str, str | int | None]


class XmlHelpers:
    def __init__(self, error: type[ValueError]) -> None:
        self.error = error

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

"""The errors of the OVF library. Every one is an ``OvfError`` (a ``ValueError``) whose message names
the element, file or member at fault, so it can go into a condition message as it is."""

from __future__ import annotations


class OvfError(ValueError):
    """Base class: the package or descriptor cannot be used as it is."""


class HostileXml(OvfError):
    """The descriptor uses DTDs, entities or external references (billion laughs, XXE …)."""


class InvalidDescriptor(OvfError):
    """The descriptor is not well-formed, not OVF, or says something that cannot be true."""


class UnsupportedFeature(OvfError):
    """Valid OVF that this library does not handle (an unknown disk format, chunked files …)."""


class ManifestError(OvfError):
    """The ``.mf`` or ``.cert`` file is malformed."""


class DigestMismatch(OvfError):
    """A file's digest differs from the manifest, or a listed file is missing."""


class SignatureInvalid(OvfError):
    """The ``.cert``'s signature does not verify over the manifest (or a certificate of its chain was
    changed): the package was altered after signing and is refused whatever the trust policy."""


class UnsafeArchive(OvfError):
    """The OVA (tar) holds something that must not be extracted, or sizes that lie."""


class ConversionError(OvfError):
    """``qemu-img`` failed or reported an image that must not be used."""

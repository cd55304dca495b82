"""Types shared by several kinds: names, selectors, references, bandwidth, the field helper."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from vdc.api.meta import UPDATE_KEY, ApiModel, UpdateClass

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
IPV4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
IPV4_CIDR = IPV4[:-1] + r"/([0-9]|[12][0-9]|3[0-2])$"
IPV6_CIDR = r"^[0-9a-fA-F:]+/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8])$"
MAC = r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""A DNS-1123 label: the name of a list entry (disk, interface) or of a cluster object we reference."""
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
"""A Kubernetes object name (DNS-1123 subdomain)."""
ShortText = Annotated[str, StringConstraints(max_length=256)]
Path = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/")]
CLEAN_PATH = r"^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$"
CleanPath = Annotated[str, StringConstraints(min_length=2, max_length=4096, pattern=CLEAN_PATH)]
"""An absolute path without ``.`` or ``..`` segments, ``//`` or a trailing slash: what it names is
decided by the text alone, up to symlinks (which only the host can resolve)."""
"""An absolute path on a host."""
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]


def field(
    description: str,
    *,
    update: UpdateClass | None = None,
    extra: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A documented model field. ``update`` says how a change is applied (see ``UpdateClass``)."""
    schema_extra: dict[str, Any] = dict(extra or {})
    if update is not None:
        schema_extra[UPDATE_KEY] = update
    return Field(description=description, json_schema_extra=schema_extra or None, **kwargs)


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry (a CEL rule checked at admission)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extras of a named list: a list-type map keyed by ``keys``."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement: a key, an operator and values."""

    key: LabelKey = field("The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = field("How the key relates to the values.")
    values: list[LabelValue] = field(
        "Values for In/NotIn; empty for Exists/DoesNotExist.", default_factory=list, max_length=64
    )


class LabelSelector(ApiModel):
    """Selects Hosts by their labels (metadata.labels), as Kubernetes label selectors do.

    An empty selector matches every host."""

    match_labels: dict[LabelKey, LabelValue] = field(
        "Labels a host must carry, all of them.", default_factory=dict, max_length=32
    )
    match_expressions: list[LabelSelectorRequirement] = field(
        "Requirements a host's labels must all meet.", default_factory=list, max_length=16
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace as the referring object."""

    name: ObjectName = field("The Secret's name.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = field("The key within the Secret.")


class SecretRef(ApiModel):
    """A Secret anywhere in the cluster (for cluster-scoped kinds)."""

    name: ObjectName = field("The Secret's name.")
    namespace: Name = field("The Secret's namespace.")


class BandwidthLimit(ApiModel):
    """Traffic shaping in one direction, as libvirt's ``<bandwidth>`` element (kilobytes)."""

    average: int = field("Average rate in KiB/s.", ge=1, le=2**32 - 1)
    peak: int | None = field("Peak rate in KiB/s.", default=None, ge=1, le=2**32 - 1)
    burst: int | None = field("Burst size in KiB at peak rate.", default=None, ge=1, le=2**32 - 1)


class Bandwidth(ApiModel):
    """Inbound and outbound traffic limits of a port."""

    inbound: BandwidthLimit | None = field("Limits traffic towards the guest.", default=None)
    outbound: BandwidthLimit | None = field("Limits traffic from the guest.", default=None)


IOTUNE_LIMITS = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
)
"""The disk limits of :class:`IoTune` and :class:`IoBurst`, as libvirt names them."""


class IoBurst(ApiModel):
    """Rates above a disk's limits that it may reach for a while (QEMU's ``*_max`` and ``*_max_length``)."""

    total_bytes_sec: int | None = field("Total bytes/s in a burst.", default=None, ge=1)
    read_bytes_sec: int | None = field("Read bytes/s in a burst.", default=None, ge=1)
    write_bytes_sec: int | None = field("Write bytes/s in a burst.", default=None, ge=1)
    total_iops_sec: int | None = field("Total IOPS in a burst.", default=None, ge=1)
    read_iops_sec: int | None = field("Read IOPS in a burst.", default=None, ge=1)
    write_iops_sec: int | None = field("Write IOPS in a burst.", default=None, ge=1)
    seconds: int | None = field("How long a burst may last at its rate (default: 1).", default=None, ge=1, le=3600)


def _burst_rule(limit: str) -> dict[str, str]:
    name = limit.split("_")[0] + "".join(w.title() for w in limit.split("_")[1:])  # the wire's camelCase
    return cel(
        f"!has(self.burst) || !has(self.burst.{name}) || (has(self.{name}) && self.burst.{name} >= self.{name})",
        f"burst.{name} needs {name} and must be at least it",
        field_path=f".burst.{name}",
    )


class IoTune(ApiModel):
    """Disk I/O limits (libvirt ``<iotune>``, QEMU's block throttling), applied live. 0 is no limit."""

    model_config = {"json_schema_extra": validations(*(_burst_rule(limit) for limit in IOTUNE_LIMITS))}

    total_bytes_sec: int | None = field("Total bytes/s.", default=None, ge=0)
    read_bytes_sec: int | None = field("Read bytes/s.", default=None, ge=0)
    write_bytes_sec: int | None = field("Write bytes/s.", default=None, ge=0)
    total_iops_sec: int | None = field("Total IOPS.", default=None, ge=0)
    read_iops_sec: int | None = field("Read IOPS.", default=None, ge=0)
    write_iops_sec: int | None = field("Write IOPS.", default=None, ge=0)
    burst: IoBurst | None = field("Rates above these limits allowed for a while.", default=None)


NamespaceSelector = LabelSelector
"""Selects namespaces by their labels (the same shape as a host selector)."""


_SELECTOR_RULES = validations(
    cel("self.from != 'Selector' || has(self.selector)", "from: Selector needs selector", field_path=".selector"),
    cel(
        "self.from == 'Selector' || !has(self.selector)",
        "selector is only used with from: Selector",
        field_path=".selector",
    ),
)


class AllowedNamespaces(ApiModel):
    """Which tenant namespaces may use a cluster-scoped object (Gateway API's ``allowedRoutes.namespaces``).

    All: every namespace. Selector: the namespaces whose labels match ``selector``. None: no namespace."""

    model_config = {"json_schema_extra": _SELECTOR_RULES}

    from_: Literal["All", "Selector", "None"] = field(
        "All, Selector (by namespace labels) or None.", default="All", alias="from"
    )
    selector: NamespaceSelector | None = field("Namespaces by their labels (from: Selector).", default=None)


class SharedWith(ApiModel):
    """Which namespaces besides its own may use a namespaced object. Same: only its own namespace."""

    model_config = {"json_schema_extra": _SELECTOR_RULES}

    from_: Literal["Same", "All", "Selector"] = field(
        "Same (its own namespace only), All, or Selector (by namespace labels).", default="Same", alias="from"
    )
    selector: NamespaceSelector | None = field("Namespaces by their labels (from: Selector).", default=None)

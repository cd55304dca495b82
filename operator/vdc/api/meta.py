"""Group/version constants, the shared model base and the per-kind CRD metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "vdc.dev"
VERSION = "v1alpha1"
FINALIZER = f"{GROUP}/finalizer"
"""Ours on every object whose deletion the operator must act on (kopf's, and the VM controller adds it itself)."""
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "vdc"

UpdateClass = Literal["live", "restart", "immutable"]
"""How a change of a spec field is applied: live, at the next restart, or refused (immutable)."""

UPDATE_KEY = "vdcUpdate"
"""json_schema_extra key carrying a field's UpdateClass; the CRD generator turns it into text and CEL."""


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """What the CRD needs besides the schema: names, scope and printer columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    printer_columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def ready_column() -> PrinterColumn:
    return PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition")


def reason_column() -> PrinterColumn:
    return PrinterColumn(
        "Reason",
        '.status.conditions[?(@.type=="Ready")].reason',
        description="Why Ready is what it is",
        priority=1,
    )


def age_column() -> PrinterColumn:
    return PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


class Resource(ApiModel):
    """A custom resource: apiVersion, kind, metadata, spec, status."""

    KIND: ClassVar[KindInfo]

    model_config = ConfigDict(extra="ignore")

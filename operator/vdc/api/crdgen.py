"""Generate CustomResourceDefinitions from the pydantic models (pure: dicts in, dicts out).

pydantic's JSON Schema is close to what Kubernetes wants but not structural: it uses ``$ref``,
``anyOf`` with ``null`` for optional fields, titles and ``additionalProperties: false``. This module
inlines references, drops what the API server refuses, turns each field's update class into text
and CEL (``self == oldSelf`` for immutable fields) and wraps the result in a CRD.
"""

from __future__ import annotations

import copy
from typing import Any

from vdc.api.meta import CATEGORY, GROUP, UPDATE_KEY, VERSION, KindInfo, Resource

Schema = dict[str, Any]

UPDATE_TEXT = {
    "live": "Changes are applied live.",
    "restart": "Changes take effect at the next restart of the VM or resource (RestartRequired).",
    "immutable": "Immutable once set.",
}

_DROP = {"title", "additionalProperties", "$defs", "discriminator", "propertyNames"}


def _merge(base: Schema, extra: Schema) -> Schema:
    merged = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            merged[key] = list(merged.get(key, [])) + list(value)
        else:
            merged[key] = value
    return merged


def _structural(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = dict(node)
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "anyOf", "allOf")}

    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _merge(_structural(target, defs, path), _structural(siblings, defs, path) if siblings else {})
    if "allOf" in node and len(node["allOf"]) == 1:
        return _merge(_structural(node["allOf"][0], defs, path), _structural(siblings, defs, path))
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"{path}: unions other than Optional[X] cannot be structural: {node['anyOf']}")
        inner = _structural(options[0], defs, path)
        rest = {k: v for k, v in siblings.items() if not (k == "default" and v is None)}
        return _merge(inner, _structural(rest, defs, path))

    out: Schema = {}
    update = node.get(UPDATE_KEY)
    for key, value in node.items():
        if key in _DROP or key == UPDATE_KEY:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out["properties"] = {name: _structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
            continue
        if key == "items":
            out["items"] = _structural(value, defs, f"{path}[]")
            continue
        out[key] = value
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs, f"{path}.*")
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        out["properties"] = {}
    if update:
        text = UPDATE_TEXT[update]
        out["description"] = f"{out.get('description', '').rstrip()} {text}".strip()
        if update == "immutable":
            name = path.rsplit(".", 1)[-1]
            out = _merge(
                out,
                {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": f"{name} is immutable"}]},
            )
    if "properties" in out:
        required = set(out.get("required", []))
        presence_rules = []
        for name, sub in node.get("properties", {}).items():
            if name in required or sub.get(UPDATE_KEY) != "immutable":
                continue
            presence_rules.append(
                {
                    "rule": f"has(self.{name}) == has(oldSelf.{name})",
                    "message": f"{name} is immutable: it cannot be added or removed once the object exists",
                    "fieldPath": f".{name}",
                }
            )
        if presence_rules:
            out = _merge(out, {"x-kubernetes-validations": presence_rules})
    return out


def _without_validations(node: Any) -> Any:
    """Status is written by the operator only: no admission rules there (and no CEL cost)."""
    if isinstance(node, dict):
        return {k: _without_validations(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_validations(v) for v in node]
    return node


def openapi_schema(resource: type[Resource]) -> Schema:
    """The structural openAPIV3Schema of one kind."""
    raw = resource.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    spec = _structural(raw["properties"]["spec"], defs, "spec")
    status = _without_validations(_structural(raw["properties"]["status"], defs, "status"))
    # spec and status are described by their models' docstrings ("Desired state of a virtual machine.").
    for part, schema in (("spec", spec), ("status", status)):
        annotation = resource.model_fields[part].annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)), None)
        if model is not None and model.__doc__:
            schema["description"] = model.__doc__.strip()
    return {
        "type": "object",
        "description": (resource.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: vdc.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind of this object: {resource.KIND.kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd(resource: type[Resource]) -> Schema:
    """The CustomResourceDefinition of one kind."""
    info: KindInfo = resource.KIND
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/part-of": "vdc-operator"}},
        "spec": {
            "group": GROUP,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"description": c.description} if c.description else {}),
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": copy.deepcopy(openapi_schema(resource))},
                }
            ],
        },
    }

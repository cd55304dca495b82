"""Label selectors evaluated against a host's labels, with Kubernetes semantics.

A selector matches when every ``matchLabels`` entry and every ``matchExpressions`` requirement
holds (AND). An empty selector matches every label set.

Requirements are evaluated literally, as ``k8s.io/apimachinery/pkg/labels`` does once a selector has
been built: ``In`` with no values matches nothing, ``NotIn`` with no values matches everything,
values given with ``Exists``/``DoesNotExist`` are ignored. (Kubernetes refuses those shapes when it
builds the selector; refusing them is admission's job, not this pure function's.)
"""

from __future__ import annotations

from collections.abc import Mapping

from vdc.api.common import LabelSelector, LabelSelectorRequirement

__all__ = ["matches", "requirement_matches"]


def requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` meet one ``matchExpressions`` requirement."""
    key = requirement.key
    match requirement.operator:
        case "In":
            return key in labels and labels[key] in requirement.values
        case "NotIn":
            # True when the key is absent, as in Kubernetes.
            return key not in labels or labels[key] not in requirement.values
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
    raise ValueError(f"unknown label selector operator {requirement.operator!r}")  # pragma: no cover


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (all matchLabels and all matchExpressions)."""
    return all(labels.get(key) == value for key, value in selector.match_labels.items()) and all(
        requirement_matches(requirement, labels) for requirement in selector.match_expressions
    )

"""JSON merge patches (RFC 7386) computed from two documents: the fewest bytes that turn old into new."""

from __future__ import annotations

import json
from typing import Any


def merge_patch(old: Any, new: Any) -> Any:
    """A merge patch that turns ``old`` into ``new``; ``{}`` when they are equal.

    Objects are diffed key by key (removed keys become ``None``); anything else, lists included,
    is replaced whole, as RFC 7386 prescribes.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(old[key], dict) and isinstance(value, dict):
            nested = merge_patch(old[key], value)
            if nested:
                patch[key] = nested
        elif _differs(old[key], value):
            patch[key] = value
    return patch


def _differs(a: Any, b: Any) -> bool:
    """JSON inequality: unlike Python's, 1 and true differ (also inside lists)."""
    return a != b or json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a merge patch (for tests and for keeping the local cache current)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result

"""JSON Merge Patch (RFC 7396), the semantics of every PATCH: pure, no I/O.

- a member the patch leaves out is unchanged;
- a member whose value is an object is merged into the target's object of that name, recursively;
- a member whose value is `null` is removed: the model's default applies again (for a field that may be null,
  whose default is null, that clears it);
- any other value (text, number, boolean, a list) replaces the member whole: lists are never merged.
"""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """The target with the patch applied; neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    merged: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged

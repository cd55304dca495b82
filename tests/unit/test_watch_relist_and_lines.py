"""The pure parts of the VM watch: what a fresh listing says happened (``relist_events``) and the JSON lines of
a streamed answer however its chunks fall (``json_lines``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vdc.kube.http import json_lines
from vdc.kube.watch import relist_events


def _vm(name: str, n: int = 0, namespace: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"n": n}}


def test_a_listing_tells_new_objects_as_added_known_ones_as_modified_and_missing_ones_as_deleted() -> None:
    seen = {("a", "kept"): _vm("kept"), ("a", "gone"): _vm("gone")}
    events = relist_events(seen, [_vm("kept", 1), _vm("new")])
    assert [(kind, body["metadata"]["name"], body["spec"]["n"]) for kind, body in events] == [
        ("MODIFIED", "kept", 1), ("ADDED", "new", 0), ("DELETED", "gone", 0),
    ]  # fmt: skip


def test_the_same_name_in_another_namespace_is_another_object() -> None:
    events = relist_events({("a", "x"): _vm("x")}, [_vm("x", namespace="b")])
    assert [(kind, body["metadata"]["namespace"]) for kind, body in events] == [("ADDED", "b"), ("DELETED", "a")]


class _Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


# The API server's numbers are 64-bit integers (or floats): what orjson reads back exactly.
INT64 = st.integers(-(2**63), 2**63 - 1)


@given(st.lists(st.dictionaries(st.text(max_size=5), INT64, max_size=3), max_size=6), st.data())
def test_every_line_is_one_object_however_the_chunks_fall(objects: list[dict[str, int]], data: st.DataObject) -> None:
    stream = b"".join(json.dumps(o).encode() + b"\n" for o in objects)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    async def read() -> list[dict[str, Any]]:
        return [o async for o in json_lines(_Chunks(chunks))]  # type: ignore[arg-type]

    assert asyncio.run(read()) == objects


def test_a_last_line_without_a_newline_is_read_too() -> None:
    async def read() -> list[dict[str, Any]]:
        return [o async for o in json_lines(_Chunks([b'{"a": 1}\n{"b"', b": 2}"]))]  # type: ignore[arg-type]

    assert asyncio.run(read()) == [{"a": 1}, {"b": 2}]

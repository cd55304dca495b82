"""vdc.kube.http.to_json: what the API server is sent reads back as the standard library would have written it."""

from __future__ import annotations

import datetime
import json

from vdc.kube.http import to_json


def test_a_body_with_dates_numbers_keys_and_text_beyond_ascii_reads_back_as_the_standard_library_writes_it() -> None:
    body = {
        "metadata": {"name": "vm-0001", "annotations": {"vdc.dev/note": "café ✓"}},
        "status": {
            "bootTime": datetime.datetime(2026, 12, 7, 2, 0, tzinfo=datetime.UTC),
            "since": datetime.date(2026, 1, 2),
        },
        "counts": {1: "one"},
        "values": [1.5, None, True, 2**40],
    }
    stdlib = json.dumps(body, default=lambda v: v.isoformat(), separators=(",", ":"))
    assert json.loads(to_json(body)) == json.loads(stdlib)
    assert b" " not in to_json({"a": [1, 2], "b": {"c": "d"}})  # compact, as before

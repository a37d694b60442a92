"""A large body's depth is measured on the parsed tree (jobq/core/strict_json.py
`_large`): the same verdicts as for a small body, without long GIL holds."""

from __future__ import annotations

import pytest

from jobq.core import strict_json
from jobq.core.errors import BadRequest

PAD = b" " * (strict_json.LARGE_BODY_BYTES + 1)  # whitespace: valid JSON, and a large body


@pytest.mark.parametrize(("opening", "closing"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_a_large_body_nested_past_the_limit_is_refused(opening: bytes, closing: bytes) -> None:
    limit = strict_json.MAX_DEPTH
    ok = opening * limit + b"1" + closing * limit + PAD
    assert strict_json.loads(ok) is not None
    with pytest.raises(BadRequest, match="nested deeper than 64"):
        strict_json.loads(opening * (limit + 1) + b"1" + closing * (limit + 1) + PAD)


def test_a_large_body_keeps_the_strict_checks() -> None:
    with pytest.raises(BadRequest, match="duplicate key"):
        strict_json.loads(b'{"a": 1, "a": 2}' + PAD)
    with pytest.raises(BadRequest, match="64 bits"):
        strict_json.loads(b"[" + b"9" * 25 + b"]" + PAD)
    wide = b"[" + b",".join([b'{"k": [1, 2, {"x": "]]]]"}]}'] * 5000) + b"]"
    assert len(strict_json.loads(wide + PAD)) == 5000

"""Static files: served by name only, versioned, and a missing one is a problem 404."""

from __future__ import annotations

import re

from tests.conftest import Harness


async def test_static_files_are_versioned_and_cached_forever(jobq: Harness) -> None:
    login = await (await jobq.client.get("/login")).text()
    match = re.search(r'href="(/static/jobq\.css\?v=[0-9a-f]{12})"', login)
    assert match, login
    versioned = await jobq.client.get(match.group(1))
    assert versioned.status == 200
    assert versioned.content_type == "text/css"
    assert "immutable" in versioned.headers["Cache-Control"]
    assert versioned.headers["X-Content-Type-Options"] == "nosniff"
    stale = await jobq.client.get("/static/jobq.css?v=000000000000")
    assert stale.headers["Cache-Control"] == "no-cache"


async def test_missing_and_traversing_static_paths_are_problem_404s(jobq: Harness) -> None:
    for path in ("/static/nope.css", "/static/..%2fapp.py", "/static/"):
        response = await jobq.client.get(path)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json", path
    # Dot segments are resolved before routing: this asks for /app.py, which needs a key.
    dotted = await jobq.client.get("/static/%2e%2e/app.py")
    assert dotted.status in (401, 404)
    assert "create_app" not in await dotted.text()

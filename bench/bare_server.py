"""A bare aiohttp JSON POST handler, the ceiling of a submit on this machine:
`POST /jobs` reads the body, parses it with orjson and answers 201 with a small
JSON object; nothing is checked or stored. `GET /healthz` for the start-up wait.

    python -m bench.bare_server   (JOBQ_HOST and JOBQ_PORT as for app.py)
"""

from __future__ import annotations

import os

import orjson
from aiohttp import web


async def create(request: web.Request) -> web.Response:
    job = orjson.loads(await request.read())
    body = orjson.dumps({"jobId": "bare", "type": job.get("type"), "status": "queued"})
    return web.Response(status=201, body=body, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/jobs", create)
    app.router.add_get("/healthz", healthz)
    host, port = os.environ.get("JOBQ_HOST", "127.0.0.1"), int(os.environ["JOBQ_PORT"])
    web.run_app(app, host=host, port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()

"""The dashboard pages (SPEC §5, issue 3): `GET /` (counts, the live job
table, the DLQ tab), `GET /ui/jobs/{job_id}` (one job) and `GET /help` (the
job state diagram).

The pages are shells: `static/dashboard.js` fills them from the JSON API and
the `/ws` WebSocket, building the DOM with `textContent` only. What the script
needs to know about the viewer (role, tenant, the job types) travels in
`data-` attributes on `<body>`, autoescaped like everything else; the server
decides what a key may do, the attributes only hide buttons it would refuse.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jobq.core.errors import NotFound
from jobq.web.auth import principal_of
from jobq.web.pages import render_page
from jobq.web.services import services_of

routes = web.RouteTableDef()


def _viewer(request: web.Request) -> dict[str, Any]:
    principal = principal_of(request)
    services = services_of(request)
    return {
        "principal": principal,
        "role": principal.role,
        "can_write": "true" if principal.can_write else "false",
        "tenant": principal.tenant_id or "",
        "types": " ".join(services.registry.names()),
    }


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    """Counts per status, the live job table, the DLQ tab."""
    return render_page(request, "dashboard.html", {**_viewer(request), "page": "dashboard"})


@routes.get("/ui/jobs/{job_id}")
async def job_page(request: web.Request) -> web.Response:
    """One job: payload, result, progress, attempts, operator actions; 404
    (problem+json) when it is missing or another tenant's."""
    services = services_of(request)
    job_id = request.match_info["job_id"]
    if await services.store.get(job_id, principal_of(request).tenant_id) is None:
        raise NotFound(f"job {job_id} not found")
    return render_page(request, "job.html", {**_viewer(request), "page": "job", "job_id": job_id})


@routes.get("/help")
async def help_page(request: web.Request) -> web.Response:
    """The job state diagram and what the dashboard shows."""
    return render_page(request, "help.html", {**_viewer(request), "page": "help"})

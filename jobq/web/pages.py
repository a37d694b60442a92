"""HTML pages: one jinja2 environment, the static files, the page headers.

Safe by construction (CONVENTIONS rule 16): autoescape is always on, every page
carries a Content-Security-Policy without 'unsafe-inline' (so templates hold no
inline script, style or event handler), and static URLs carry a version derived
from the file's content, so a changed file is never served from a stale cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from jobq.core.errors import NotFound

ROOT = Path(__file__).resolve().parents[2]  # the repository: templates/ and static/ sit at the top
TEMPLATE_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Same-origin requests keep their Referer: the CSRF check falls back on it.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

TEMPLATES = web.AppKey("jobq.templates", jinja2.Environment)


def setup_pages(app: web.Application) -> None:
    """Serve `static/` under `/static/` and give `app` its template environment,
    in which `static_url('x.css')` is `/static/x.css?v=<content hash>`."""
    versions = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for path in STATIC_DIR.iterdir() if path.is_file()
    }

    async def static_file(request: web.Request) -> web.StreamResponse:
        # Only the files that were there at start, by name: no paths, no
        # traversal, and a missing one is the same problem+json 404 as any.
        name = request.match_info["filename"]
        if name not in versions:
            raise NotFound(f"no static file {name}")
        cache = "public, max-age=31536000, immutable" if request.query.get("v") == versions[name] else "no-cache"
        return web.FileResponse(
            STATIC_DIR / name, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": cache}
        )

    app.router.add_get("/static/{filename}", static_file, name="static")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def static_url(filename: str) -> str:
        return f"/static/{filename}?v={versions[filename]}"

    env.globals["static_url"] = static_url
    app[TEMPLATES] = env


def render_page(
    request: web.Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """`template` rendered (autoescaped) with the page headers, plus `headers`."""
    html = request.app[TEMPLATES].get_template(template).render(context or {})
    return web.Response(
        status=status, text=html, content_type="text/html", charset="utf-8", headers={**PAGE_HEADERS, **(headers or {})}
    )


def redirect(location: str, headers: dict[str, str] | None = None) -> web.Response:
    """A `303 See Other` to a path of this service, never cached."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store", **(headers or {})})

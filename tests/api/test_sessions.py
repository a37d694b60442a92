"""Dashboard sign-in and the session cookie, through real HTTP on loopback:
the login page, the cookie's attributes and lifetime, the CSRF rule for
cookie-authenticated writes, and where the session secret comes from."""

from __future__ import annotations

import logging
import re
import stat
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web

from jobq.core.clock import FakeClock
from jobq.core.config import ConfigError, Secret, Settings
from jobq.tenancy.tenants import TenantsDoc, hash_key
from jobq.web.auth import SESSIONS
from jobq.web.sessions import COOKIE_NAME, SECRET_FILE, SessionCodec, SessionSecretError, load_secret
from jobq.web.views.session import set_session_cookie
from tests.conftest import Harness, HarnessFactory

HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def origin(jobq: Harness) -> str:
    return f"http://{jobq.client.host}:{jobq.client.port}"


async def post_login(jobq: Harness, key: str, **headers: str) -> ClientResponse:
    headers.setdefault("Origin", origin(jobq))
    response = await jobq.client.post("/login", data={"key": key}, headers=headers, allow_redirects=False)
    await response.read()
    return response


def set_cookie_header(response: ClientResponse) -> str:
    [header] = [v for v in response.headers.getall("Set-Cookie", []) if v.startswith(f"{COOKIE_NAME}=")]
    return header


async def login(jobq: Harness, who: str = "acme") -> str:
    """Sign `who` in; returns the cookie's token. The client's own cookie jar
    is emptied, so each request below says exactly which cookie it sends."""
    response = await post_login(jobq, jobq.key(who))
    assert response.status == 303
    assert response.headers["Location"] == "/"
    cookie = SimpleCookie()
    cookie.load(set_cookie_header(response))
    jobq.client.session.cookie_jar.clear()
    return cookie[COOKIE_NAME].value


def with_cookie(token: str, **extra: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={token}", **extra}


class InlineCodeFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]
        if any(name == "href" and str(value).startswith("javascript:") for name, value in attrs):
            self.inline.append(f"{tag} javascript: URL")
        if tag == "link" and names.get("rel") == "stylesheet":
            self.stylesheets.append(str(names["href"]))


# ---- the login page ------------------------------------------------------------


async def test_login_page_is_html_with_a_strict_csp_and_no_inline_code(jobq: Harness) -> None:
    response = await jobq.client.get("/login")
    html = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert '<form method="post" action="/login"' in html and 'name="key"' in html
    finder = InlineCodeFinder()
    finder.feed(html)
    assert finder.inline == []
    [stylesheet] = finder.stylesheets
    assert re.fullmatch(r"/static/jobq\.css\?v=[\w%-]+", stylesheet), stylesheet
    css = await jobq.client.get(stylesheet)
    assert css.status == 200 and css.content_type == "text/css"


async def test_a_good_key_sets_an_httponly_samesite_strict_cookie_and_redirects(jobq: Harness) -> None:
    response = await post_login(jobq, jobq.key("acme"))
    assert response.status == 303
    assert response.headers["Location"] == "/"
    header = set_cookie_header(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in header.lower() and "path=/" in header.lower()
    assert "max-age=43200" in header.lower()  # JOBQ_SESSION_HOURS=12
    assert "secure" not in attributes  # plain http here; see the https test below


def test_the_cookie_is_secure_when_the_request_came_over_https() -> None:
    response = web.Response()
    set_session_cookie(response, "token", max_age=60, secure=True)
    assert response.cookies[COOKIE_NAME]["secure"] is True
    assert response.cookies[COOKIE_NAME]["httponly"] is True
    assert response.cookies[COOKIE_NAME]["samesite"] == "Strict"


async def test_a_bad_or_missing_key_shows_the_form_again(jobq: Harness) -> None:
    bad = await post_login(jobq, "jq_not-a-key")
    assert bad.status == 401
    assert bad.content_type == "text/html"
    assert bad.headers["WWW-Authenticate"].startswith("ApiKey")
    assert "not known" in await bad.text()
    assert COOKIE_NAME not in bad.cookies
    empty = await post_login(jobq, "   ")
    assert empty.status == 400
    assert "Paste an API key" in await empty.text()


async def test_a_signed_in_browser_is_sent_on_from_the_login_page(jobq: Harness) -> None:
    token = await login(jobq)
    again = await jobq.client.get("/login", headers=with_cookie(token), allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/"
    home = await jobq.client.get("/", headers=with_cookie(token, Accept=HTML_ACCEPT))
    assert home.status == 200
    assert "acme/first" in await home.text()
    assert "unsafe-inline" not in home.headers["Content-Security-Policy"]


async def test_login_from_another_site_is_refused(jobq: Harness) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": ""}):
        response = await post_login(jobq, jobq.key("acme"), **headers)
        assert response.status == 403
        assert response.content_type == "application/problem+json"
        assert COOKIE_NAME not in response.cookies
    # A browser always sends Origin with a form POST; a request with neither
    # header is not one of our pages posting.
    bare = await jobq.client.post("/login", data={"key": jobq.key("acme")}, allow_redirects=False)
    assert bare.status == 403


# ---- the cookie as a credential ------------------------------------------------


async def test_the_cookie_authenticates_api_requests(jobq: Harness) -> None:
    job = await jobq.submit("acme")
    token = await login(jobq)
    listing = await jobq.client.get("/jobs", headers=with_cookie(token))
    assert listing.status == 200
    assert [j["jobId"] for j in (await listing.json())["jobs"]] == [job["jobId"]]
    one = await jobq.client.get(f"/jobs/{job['jobId']}", headers=with_cookie(token))
    assert one.status == 200


async def test_cookie_sessions_keep_tenants_apart(jobq: Harness) -> None:
    foreign = await jobq.submit("globex")
    token = await login(jobq, "acme")
    seen = await jobq.client.get(f"/jobs/{foreign['jobId']}", headers=with_cookie(token))
    assert seen.status == 404
    listing = await (await jobq.client.get("/jobs", headers=with_cookie(token))).json()
    assert listing["jobs"] == []
    cancel = await jobq.client.post(f"/jobs/{foreign['jobId']}/cancel", headers=with_cookie(token, Origin=origin(jobq)))
    assert cancel.status == 404
    assert (await jobq.get(foreign["jobId"], "globex"))["status"] == "queued"


async def test_an_admin_session_sees_every_tenant(jobq: Harness) -> None:
    await jobq.submit("acme")
    await jobq.submit("globex")
    token = await login(jobq, "admin")
    listing = await (await jobq.client.get("/jobs", headers=with_cookie(token))).json()
    assert {j["tenantId"] for j in listing["jobs"]} == {"acme", "globex"}


async def test_a_read_only_session_reads_but_gets_403_on_writes(jobq: Harness) -> None:
    job = await jobq.submit("acme")
    token = await login(jobq, "acme_read")
    assert (await jobq.client.get(f"/jobs/{job['jobId']}", headers=with_cookie(token))).status == 200
    cancel = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=with_cookie(token, Origin=origin(jobq)))
    assert cancel.status == 403
    assert (await jobq.get(job["jobId"]))["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Referer": "not a url at all"},
    ],
    ids=["no-origin-no-referer", "foreign-origin", "null-origin", "foreign-referer", "garbage-referer"],
)
async def test_a_cross_site_cookie_write_is_refused_and_changes_nothing(jobq: Harness, headers: dict[str, str]) -> None:
    job = await jobq.submit("acme")
    token = await login(jobq)
    response = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=with_cookie(token, **headers))
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert "cross-site" in (await response.json())["detail"]
    submit = await jobq.client.post("/jobs", json={"type": "echo"}, headers=with_cookie(token, **headers))
    assert submit.status == 403
    assert (await jobq.get(job["jobId"]))["status"] == "queued"
    assert len((await (await jobq.client.get("/jobs", headers=jobq.headers())).json())["jobs"]) == 1


async def test_a_same_origin_cookie_write_works_by_origin_or_referer(jobq: Harness) -> None:
    first, second = await jobq.submit("acme"), await jobq.submit("acme")
    token = await login(jobq)
    by_origin = await jobq.client.post(
        f"/jobs/{first['jobId']}/cancel", headers=with_cookie(token, Origin=origin(jobq))
    )
    assert by_origin.status == 200
    assert (await by_origin.json())["status"] == "cancelled"
    referer = origin(jobq) + "/jobs?status=queued"
    by_referer = await jobq.client.post(f"/jobs/{second['jobId']}/cancel", headers=with_cookie(token, Referer=referer))
    assert by_referer.status == 200
    submit = await jobq.client.post("/jobs", json={"type": "echo"}, headers=with_cookie(token, Origin=origin(jobq)))
    assert submit.status == 201


async def test_an_api_key_needs_no_origin_even_beside_a_cookie(jobq: Harness) -> None:
    job = await jobq.submit("acme")
    token = await login(jobq, "acme_read")
    # The header wins: an attacker's page cannot set X-API-Key cross-site.
    cancel = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=with_cookie(token, **jobq.headers()))
    assert cancel.status == 200


# ---- sessions that must not work -----------------------------------------------


def tampered_tokens(token: str) -> dict[str, str]:
    version, digest, expires, signature = token.split(".")
    flip = "A" if signature[0] != "A" else "B"
    other_digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    return {
        "signature": f"{version}.{digest}.{expires}.{flip}{signature[1:]}",
        "key hash": f"{version}.{other_digest}.{expires}.{signature}",
        "expiry": f"{version}.{digest}.{int(expires) + 86400}.{signature}",
        "version": f"v2.{digest}.{expires}.{signature}",
        "unpadded tail": f"{token}=",
        "truncated": token[:-1],
        "empty": "",
        "garbage": "not-a-session",
        "dots": "...",
        "non-ascii": f"{version}.{digest}.{expires}.{signature[:-1]}é",
        "digits": f"{version}.{digest}.{'٣' * 10}.{signature}",
    }


async def assert_rejected(jobq: Harness, token: str) -> None:
    api = await jobq.client.get("/jobs", headers=with_cookie(token))
    assert api.status == 401, token
    assert api.content_type == "application/problem+json"
    assert api.headers["WWW-Authenticate"].startswith("ApiKey")
    page = await jobq.client.get("/", headers=with_cookie(token, Accept=HTML_ACCEPT), allow_redirects=False)
    assert page.status == 303, token
    assert page.headers["Location"] == "/login"


async def test_tampered_and_malformed_cookies_are_rejected(jobq: Harness) -> None:
    token = await login(jobq)
    for token_variant in tampered_tokens(token).values():
        await assert_rejected(jobq, token_variant)
    assert (await jobq.client.get("/jobs", headers=with_cookie(token))).status == 200


async def test_a_cookie_signed_under_another_secret_is_rejected(jobq: Harness) -> None:
    other = SessionCodec(b"x" * 32, 3600, jobq.clock)
    await assert_rejected(jobq, other.issue(hash_key(jobq.key("acme"))))


async def test_a_session_expires_after_its_lifetime(jobq: Harness) -> None:
    token = await login(jobq)
    jobq.clock.advance(12 * 3600 - 1)
    assert (await jobq.client.get("/jobs", headers=with_cookie(token))).status == 200
    jobq.clock.advance(1)
    await assert_rejected(jobq, token)


async def test_without_credentials_pages_redirect_and_the_api_says_401(jobq: Harness) -> None:
    page = await jobq.client.get("/", headers={"Accept": HTML_ACCEPT}, allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    api = await jobq.client.get("/jobs")
    assert api.status == 401 and api.content_type == "application/problem+json"
    assert "WWW-Authenticate" in api.headers
    post = await jobq.client.post("/jobs", json={"type": "echo"}, headers={"Accept": HTML_ACCEPT})
    assert post.status == 401  # only page GETs are redirected


async def test_removing_the_key_from_the_tenants_file_ends_its_sessions(jobq: Harness) -> None:
    token = await login(jobq, "acme")
    other = await login(jobq, "globex")
    path = jobq.settings.tenants_file
    doc = TenantsDoc.read(path)
    removed = hash_key(jobq.key("acme"))
    doc.tenants["acme"]["keys"] = [k for k in doc.tenants["acme"]["keys"] if k["hash"] != removed]
    doc.write(path)
    jobq.clock.advance(1.1)  # the registry looks at the file at most once a second
    await assert_rejected(jobq, token)
    assert (await jobq.client.get("/jobs", headers=with_cookie(other))).status == 200


async def test_logout_clears_the_cookie(jobq: Harness) -> None:
    token = await login(jobq)
    foreign = await jobq.client.post(
        "/logout", headers=with_cookie(token, Origin="https://evil.example"), allow_redirects=False
    )
    assert foreign.status == 403
    response = await jobq.client.post("/logout", headers=with_cookie(token, Origin=origin(jobq)), allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login"
    header = set_cookie_header(response)
    assert header.startswith(f'{COOKIE_NAME}="";') or header.startswith(f"{COOKIE_NAME}=;")
    assert "max-age=0" in header.lower()


async def test_bad_key_logins_count_toward_the_per_address_429(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(auth_failures_per_minute=3)
    for _ in range(2):
        assert (await post_login(jobq, "jq_wrong")).status == 401
    api = await jobq.client.get("/jobs", headers={"X-API-Key": "jq_wrong"})  # the same window
    assert api.status == 401
    blocked = await post_login(jobq, "jq_wrong_again")
    assert blocked.status == 429
    assert blocked.content_type == "text/html"
    assert int(blocked.headers["Retry-After"]) == 60
    assert COOKIE_NAME not in blocked.cookies
    assert (await jobq.client.get("/jobs", headers={"X-API-Key": "jq_wrong"})).status == 429
    # Only failed attempts are throttled (issue 8): a valid key still signs in.
    assert (await post_login(jobq, jobq.key("acme"))).status == 303
    jobq.clock.advance(60)
    assert (await post_login(jobq, "jq_wrong")).status == 401


# ---- the secret ----------------------------------------------------------------


async def test_the_secret_file_is_private_and_reused_across_restarts(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    path = first.settings.data_dir / SECRET_FILE
    secret = path.read_bytes()
    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = await login(first)
    await first.store.close()
    second = await make_harness()
    assert path.read_bytes() == secret
    assert (await second.client.get("/jobs", headers=with_cookie(token))).status == 200


async def test_jobq_session_secret_overrides_the_file(make_harness: HarnessFactory) -> None:
    configured = Settings.from_env({"JOBQ_SESSION_SECRET": "s" * 40}).session_secret
    first = await make_harness(session_secret=configured)
    assert not (first.settings.data_dir / SECRET_FILE).exists()
    token = await login(first)
    assert (await first.client.get("/jobs", headers=with_cookie(token))).status == 200
    await first.store.close()
    from_file = await make_harness()  # no JOBQ_SESSION_SECRET: the file's secret
    await assert_rejected(from_file, token)
    await from_file.store.close()
    again = await make_harness(session_secret=Secret("s" * 40))
    assert (await again.client.get("/jobs", headers=with_cookie(token))).status == 200


def test_session_settings_are_read_and_checked() -> None:
    settings = Settings.from_env({"JOBQ_SESSION_SECRET": "k" * 32, "JOBQ_SESSION_HOURS": "0.5"})
    assert settings.session_hours == 0.5
    assert settings.session_secret is not None and settings.session_secret.reveal() == "k" * 32
    assert Settings.from_env({}).session_secret is None
    with pytest.raises(ConfigError, match="JOBQ_SESSION_SECRET") as short:
        Settings.from_env({"JOBQ_SESSION_SECRET": "tooshort-but-secret"})
    assert "tooshort-but-secret" not in str(short.value)
    with pytest.raises(ConfigError, match="JOBQ_SESSION_HOURS"):
        Settings.from_env({"JOBQ_SESSION_HOURS": "0"})


def test_secret_values_have_a_masked_repr(tmp_path: Path) -> None:
    value = "v" * 40
    settings = Settings(session_secret=Secret(value))
    assert value not in repr(settings) and value not in str(settings.session_secret)
    assert value not in f"{settings.session_secret}"
    key = load_secret(tmp_path, None)
    codec = SessionCodec(key, 60, FakeClock())
    assert repr(key) not in repr(codec) and key.hex() not in repr(codec)


def test_a_session_file_of_the_wrong_size_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_bytes(b"short")
    with pytest.raises(SessionSecretError, match="5 bytes"):
        load_secret(tmp_path, None)
    assert path.read_bytes() == b"short"


# ---- the key stays secret ------------------------------------------------------


async def test_the_key_never_appears_in_a_cookie_a_response_or_a_log(
    jobq: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = jobq.key("acme")
    seen: list[str] = []

    async def keep(response: ClientResponse) -> ClientResponse:
        seen.append(str(response.headers) + (await response.read()).decode("utf-8", "replace"))
        return response

    await keep(await jobq.client.get("/login"))
    bad = await keep(await post_login(jobq, key + "x"))
    assert bad.status == 401
    good = await keep(await post_login(jobq, key))
    token = await login(jobq)
    seen.append(token)
    headers = with_cookie(token, Origin=origin(jobq), Accept=HTML_ACCEPT)
    job = await jobq.submit()
    await keep(await jobq.client.get("/", headers=headers))
    await keep(await jobq.client.get("/jobs", headers=with_cookie(token)))
    await keep(await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=with_cookie(token, Origin=origin(jobq))))
    await keep(await jobq.client.post("/logout", headers=headers, allow_redirects=False))
    assert good.status == 303
    everything = "\n".join([*seen, caplog.text, repr(jobq.app[SESSIONS])])
    assert key not in everything
    assert key[3:] not in everything  # not even without its prefix
    assert key.encode() not in (jobq.settings.data_dir / SECRET_FILE).read_bytes()


async def test_pages_escape_what_they_show(jobq: Harness) -> None:
    doc = TenantsDoc.read(jobq.settings.tenants_file)
    key = doc.add_key("acme", read_only=False, label="<script>alert(1)</script>")
    doc.write(jobq.settings.tenants_file)
    jobq.clock.advance(1.1)
    response = await post_login(jobq, key)
    cookie = SimpleCookie()
    cookie.load(set_cookie_header(response))
    jobq.client.session.cookie_jar.clear()
    home = await jobq.client.get("/", headers=with_cookie(cookie[COOKIE_NAME].value, Accept=HTML_ACCEPT))
    html = await home.text()
    assert home.status == 200
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

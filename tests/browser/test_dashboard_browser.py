"""The dashboard in a real browser: Debian's Chromium, headless, driven by
Playwright against a real jobq on loopback (issue 3).

The worker is driven by the test (`run_once`, `drain`), so a job can be held
in `running`; every wait is an `expect` with a timeout, never a fixed sleep.
Alerts and webhook deliveries are driven the same way: the test calls the
alert monitor's `check()` and the sender's `run_until_idle()`, and moves the
fake clock. Screenshots of the main views go to `test-output/screenshots/`.
A dialog the test did not ask for (an `alert` from injected markup) fails
the test, and so does an uncaught script error or a Content-Security-Policy
violation.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    WebSocket,
    WebSocketRoute,
    async_playwright,
    expect,
)

from jobq.tenancy.tenants import TenantsDoc, hash_key
from jobq.web.factory import ALERTS, SENDER
from tests.conftest import ROOT, Harness, HarnessFactory
from tests.support.receivers import Receiver, answer

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
WAIT_MS = 10_000
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "</script><script>alert(1)</script>"
expect.set_options(timeout=WAIT_MS)

# Webhooks to a receiver on 127.0.0.1: the address guard must allow loopback.
# One retry a minute after the first try, and a short timeout for "no answer".
LOOPBACK_WEBHOOKS = pytest.mark.parametrize(
    "jobq",
    [{"allow_private_urls": True, "webhook_retry_schedule": (60.0,), "webhook_timeout_seconds": 0.5}],
    indirect=True,
    ids=["loopback-webhooks"],
)


@dataclass
class UI:
    """One browser page on one jobq, and what it reported."""

    page: Page
    jobq: Harness
    accept_dialogs: bool = False
    dialogs: list[str] = field(default_factory=list)
    unexpected_dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.jobq.client.make_url(path))

    async def login(self, who: str = "acme") -> None:
        await self.page.goto(self.url("/login"))
        await self.page.fill("#key", self.jobq.key(who))
        await self.page.click("button[type=submit]")
        await expect(self.page).to_have_url(self.url("/"))

    async def expect_status(self, job_id: str, status: str) -> None:
        await expect(self.page.locator(f'tr[data-job-id="{job_id}"]')).to_have_attribute(
            "data-status", status, timeout=WAIT_MS
        )

    async def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def jobq(request: pytest.FixtureRequest, make_harness: HarnessFactory) -> Harness:
    """The conftest's jobq; `LOOPBACK_WEBHOOKS` passes settings to it."""
    return await make_harness(**getattr(request, "param", {}))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        # In CI (.ci/run installs it) a missing browser is a failure, not a skip.
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def ui(browser: Browser, jobq: Harness) -> AsyncIterator[UI]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    state = UI(page, jobq)

    async def on_dialog(dialog: Dialog) -> None:
        state.dialogs.append(dialog.message)
        if state.accept_dialogs and dialog.type == "confirm":
            await dialog.accept()
        else:
            state.unexpected_dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            state.errors.append(message.text)

    def on_page_error(error: Error) -> None:
        state.errors.append(f"{error.name}: {error.message}")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        yield state
    finally:
        await context.close()
    assert state.unexpected_dialogs == [], "the page opened a dialog nobody asked for"
    assert state.errors == [], "the page had script errors or CSP violations"


async def test_a_job_goes_queued_running_succeeded_without_reload(ui: UI, jobq: Harness) -> None:
    await ui.login("acme")
    page = ui.page
    await expect(page.locator("#conn")).to_have_text("live")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    # Long enough to be seen running (the handler really sleeps), short enough for a quick test.
    job = await jobq.submit(type="sleep", payload={"seconds": 2}, webhookUrl="https://hooks.example.com/done")
    job_id = job["jobId"]
    await ui.expect_status(job_id, "queued")
    await jobq.worker.run_once()
    await ui.expect_status(job_id, "running")
    await ui.screenshot("dashboard-running")
    await jobq.drain()
    await ui.expect_status(job_id, "succeeded")
    # Counts come with the metrics, about once a second.
    await expect(page.locator('.count[data-status="succeeded"] .count-n')).to_have_text("1")
    await expect(page.locator('.count[data-status="running"] .count-n')).to_have_text("0")
    await expect(page.locator("#chart canvas")).to_have_count(1)
    await expect(page.locator("#chart")).to_have_attribute("data-points", "60")
    assert navigations == [], "the page reloaded"
    await ui.screenshot("dashboard")

    # Filters: the succeeded tab holds it, the fatal tab does not.
    await page.click('.tab[data-status="fatal"]')
    await expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_have_count(0)
    await page.click('.tab[data-status="succeeded"]')
    await ui.expect_status(job_id, "succeeded")

    # The job page, from the table's link.
    await page.click(f'tr[data-job-id="{job_id}"] a.jobid')
    await expect(page).to_have_url(ui.url(f"/ui/jobs/{job_id}"))
    await expect(page.locator("#j-status")).to_have_text("succeeded")
    await expect(page.locator("#j-payload")).to_contain_text('"seconds": 2')
    await expect(page.locator("#j-result")).to_contain_text('"slept": 2')
    await expect(page.locator("#j-attempts li")).to_have_count(1)
    await expect(page.locator("#j-attempts li").first).to_contain_text("succeeded")
    await expect(page.locator("#j-cancel")).to_be_hidden()
    # Its webhook delivery, queued in the outbox when the job ended.
    await expect(page.locator("#j-deliveries li")).to_have_count(1)
    await expect(page.locator("#j-deliveries li").first).to_contain_text("job.succeeded")
    await expect(page.locator("#j-deliveries li").first).to_contain_text("pending")
    await ui.screenshot("job")


async def test_new_jobs_appear_live_newest_first_and_older_pages_load(ui: UI, jobq: Harness) -> None:
    first = [(await jobq.submit(payload={"n": i}))["jobId"] for i in range(3)]
    await ui.login("acme")
    await expect(ui.page.locator("#conn")).to_have_text("live")
    await expect(ui.page.locator("#rows tr")).to_have_count(3)
    newest = (await jobq.submit(payload={"n": 3}))["jobId"]
    await ui.expect_status(newest, "queued")
    assert await ui.page.locator("#rows tr").first.get_attribute("data-job-id") == newest
    # Search narrows the table (server side), and its live updates too.
    await ui.page.fill("#f-q", '"n":1')
    await expect(ui.page.locator("#rows tr")).to_have_count(1)
    await ui.expect_status(first[1], "queued")
    await ui.page.fill("#f-q", "")
    await expect(ui.page.locator("#rows tr")).to_have_count(4)


async def test_polling_when_the_websocket_is_blocked_then_live_again(ui: UI, jobq: Harness) -> None:
    blocked = True

    async def route(ws: WebSocketRoute) -> None:
        if blocked:
            await ws.close()
        else:
            ws.connect_to_server()

    await ui.page.route_web_socket("**/ws*", route)
    await ui.login("acme")
    await expect(ui.page.locator("#conn")).to_have_text("polling")
    job_id = (await jobq.submit(type="echo", payload={"hello": "poll"}))["jobId"]
    await ui.expect_status(job_id, "queued")
    await jobq.drain()
    await ui.expect_status(job_id, "succeeded")
    await expect(ui.page.locator('.count[data-status="succeeded"] .count-n')).to_have_text("1")
    await ui.screenshot("dashboard-polling")
    blocked = False
    await expect(ui.page.locator("#conn")).to_have_text("live", timeout=20_000)


async def test_retry_from_the_dlq(ui: UI, jobq: Harness) -> None:
    one = (await jobq.submit(type="fail", payload={"permanent": True, "message": "boom"}))["jobId"]
    await jobq.drain()
    await ui.login("acme")
    await ui.page.goto(ui.url("/?status=fatal"))
    await ui.expect_status(one, "fatal")
    await expect(ui.page.locator("#bulk-retry")).to_be_visible()
    await ui.screenshot("dlq")
    await ui.page.click(f'tr[data-job-id="{one}"] button[data-action="retry"]')
    await expect(ui.page.locator(f'tr[data-job-id="{one}"]')).to_have_count(0)
    job = await jobq.get(one)
    assert job["status"] == "queued"
    assert [a["action"] for a in job["operatorActions"]] == ["retry"]

    # Retry all matching: asks first.
    await jobq.drain()  # the second attempt succeeds (the job fails its first attempt only)
    more = [(await jobq.submit(type="fail", payload={"permanent": True, "times": 5}))["jobId"] for _ in range(2)]
    await jobq.drain()
    for job_id in more:
        await ui.expect_status(job_id, "fatal")
    ui.accept_dialogs = True
    await ui.page.click("#bulk-retry")
    await expect(ui.page.locator("#notice")).to_contain_text("2 of 2")
    await expect(ui.page.locator("#rows tr")).to_have_count(0)
    assert len(ui.dialogs) == 1 and "Retry every job matching status fatal" in ui.dialogs[0]
    assert {(await jobq.get(job_id))["status"] for job_id in more} == {"queued"}

    # The job page says who retried it.
    await ui.page.goto(ui.url(f"/ui/jobs/{one}"))
    await expect(ui.page.locator("#j-actions li")).to_contain_text("retry by acme")
    await expect(ui.page.locator("#j-attempts li")).to_have_count(2)


async def test_markup_in_payload_and_error_is_shown_as_text(ui: UI, jobq: Harness) -> None:
    evil = f"{XSS_IMG} {XSS_SCRIPT}"
    job_id = (
        await jobq.submit(type="fail", payload={"permanent": True, "message": evil, "note": XSS_SCRIPT, "img": XSS_IMG})
    )["jobId"]
    await jobq.drain()
    await ui.login("acme")
    await ui.expect_status(job_id, "fatal")
    await expect(ui.page.locator(f'tr[data-job-id="{job_id}"] td.note')).to_have_text(f"PermanentError: {evil}")
    await ui.page.fill("#f-q", "onerror")
    await expect(ui.page.locator("#rows tr")).to_have_count(1)
    await ui.page.goto(ui.url(f"/ui/jobs/{job_id}"))
    await expect(ui.page.locator("#j-payload")).to_contain_text(XSS_SCRIPT)
    await expect(ui.page.locator("#j-payload")).to_contain_text(XSS_IMG)
    await expect(ui.page.locator("#j-error")).to_have_text(f"PermanentError: {evil}")
    await expect(ui.page.locator("#j-attempts .attempt-error")).to_have_text(f"PermanentError: {evil}")
    assert await ui.page.locator("main img").count() == 0
    assert await ui.page.locator("main script").count() == 0
    await ui.screenshot("job-markup")
    assert ui.dialogs == []


async def test_a_read_only_key_sees_no_action_buttons(ui: UI, jobq: Harness) -> None:
    fatal = (await jobq.submit(type="fail", payload={"permanent": True}))["jobId"]
    await jobq.drain()
    queued = (await jobq.submit(type="echo"))["jobId"]
    await ui.login("acme_read")
    page = ui.page
    await expect(page.locator("body")).to_have_attribute("data-role", "read")
    await ui.expect_status(queued, "queued")
    await ui.expect_status(fatal, "fatal")
    await expect(page.locator("#rows button")).to_have_count(0)
    await page.click('.tab[data-status="fatal"]')
    await expect(page.locator(f'tr[data-job-id="{queued}"]')).to_have_count(0)
    await expect(page.locator("#bulk-retry")).to_be_hidden()
    await page.goto(ui.url(f"/ui/jobs/{fatal}"))
    await expect(page.locator("#j-status")).to_have_text("fatal")
    await expect(page.locator("#j-retry")).to_be_hidden()
    await expect(page.locator("#j-cancel")).to_be_hidden()
    # And the server refuses anyway, whatever the page shows.
    status = await page.evaluate("async (id) => (await fetch(`/jobs/${id}/retry`, {method: 'POST'})).status", fatal)
    assert status == 403


async def test_help_page_shows_the_state_diagram(ui: UI, jobq: Harness) -> None:
    await ui.login("admin")
    await ui.page.goto(ui.url("/help"))
    await expect(ui.page.locator(".transitions tbody tr")).to_have_count(14)
    diagram = ui.page.locator("img.diagram")
    await expect(diagram).to_be_visible()
    assert await diagram.evaluate("img => img.complete && img.naturalWidth > 0")  # the SVG loaded under the CSP
    await expect(ui.page.locator("#conn")).to_have_text("live")
    await ui.screenshot("help")


async def test_an_admin_sees_every_tenant_and_can_filter_by_one(ui: UI, jobq: Harness) -> None:
    acme = (await jobq.submit("acme"))["jobId"]
    globex = (await jobq.submit("globex"))["jobId"]
    await ui.login("admin")
    await expect(ui.page.locator("#conn")).to_have_text("live")
    await ui.expect_status(acme, "queued")
    await ui.expect_status(globex, "queued")
    await ui.page.fill("#f-tenant", "globex")
    await ui.page.press("#f-tenant", "Enter")
    await expect(ui.page.locator(f'tr[data-job-id="{acme}"]')).to_have_count(0)
    await expect(ui.page.locator("#conn")).to_have_text("live")
    # Live events of the filtered tenant still arrive; the other tenant's do not show.
    later_acme = (await jobq.submit("acme"))["jobId"]
    later_globex = (await jobq.submit("globex"))["jobId"]
    await ui.expect_status(later_globex, "queued")
    await expect(ui.page.locator(f'tr[data-job-id="{later_acme}"]')).to_have_count(0)


async def test_an_alert_shows_live_and_clears_when_the_dlq_is_emptied(ui: UI, jobq: Harness) -> None:
    await ui.login("acme")
    page = ui.page
    await expect(page.locator("#conn")).to_have_text("live")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await expect(page.locator('.dcount[data-delivery-status="failed"] .dcount-n')).to_have_text("0")
    await expect(page.locator("#alerts-none")).to_be_visible()
    job_id = (await jobq.submit(type="fail", payload={"permanent": True, "message": "boom"}))["jobId"]
    await jobq.drain()
    await ui.expect_status(job_id, "fatal")

    monitor = jobq.app[ALERTS]
    assert await monitor.check() == []  # the monitor sees the DLQ non-empty from now
    jobq.clock.advance(jobq.settings.dlq_alert_seconds - 1)
    assert await monitor.check() == []
    jobq.clock.advance(2)
    raised = await monitor.check()
    assert [a.kind for a in raised] == ["dlq_not_empty"]
    alert = page.locator('#alerts li[data-kind="dlq_not_empty"]')
    await expect(alert).to_contain_text("DLQ not empty")
    await expect(alert.locator(".alert-message")).to_have_text(raised[0].message)
    await expect(alert).to_contain_text("since ")
    await expect(alert.locator("a")).to_have_attribute("href", "/?status=fatal")
    await expect(page.locator("#alerts-none")).to_be_hidden()
    await ui.screenshot("dashboard-alert")

    # Retried from the table, the DLQ is empty: the next check clears the alert.
    await page.click(f'tr[data-job-id="{job_id}"] button[data-action="retry"]')
    await ui.expect_status(job_id, "queued")
    assert [(a.kind, a.active) for a in await monitor.check()] == [("dlq_not_empty", False)]
    await expect(alert).to_have_count(0)
    await expect(page.locator("#alerts-none")).to_be_visible()
    assert navigations == [], "the page reloaded"


async def test_alerts_show_while_polling(ui: UI, jobq: Harness) -> None:
    async def blocked(ws: WebSocketRoute) -> None:
        await ws.close()

    await ui.page.route_web_socket("**/ws*", blocked)
    await jobq.submit(type="fail", payload={"permanent": True})
    await jobq.drain()
    monitor = jobq.app[ALERTS]
    await monitor.check()
    jobq.clock.advance(jobq.settings.dlq_alert_seconds)
    assert len(await monitor.check()) == 1
    await ui.login("acme")
    await expect(ui.page.locator("#conn")).to_have_text("polling")
    await expect(ui.page.locator('#alerts li[data-kind="dlq_not_empty"]')).to_contain_text("the DLQ of acme")


async def settled(ws: WebSocket) -> None:
    """Two metrics messages more: what the page fetched when it went live is shown."""
    for _ in range(2):
        await ws.wait_for_event("framereceived", lambda payload: '"type":"metrics"' in str(payload))


async def slow_answer(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(2)  # longer than the sender's 0.5 s timeout: no answer
    return web.Response()


@LOOPBACK_WEBHOOKS
async def test_the_job_page_shows_delivery_attempts_and_redelivers(
    ui: UI, jobq: Harness, receive: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receive(slow_answer, answer(500), answer(200))
    job_id = (
        await jobq.submit(type="fail", payload={"permanent": True, "message": "boom"}, webhookUrl=receiver.url())
    )["jobId"]
    await jobq.drain()
    sender = jobq.app[SENDER]
    await sender.run_until_idle()  # attempt 1: no answer in time; one retry left, a minute later

    # The job page lists each attempt.
    await ui.login("acme")
    page = ui.page
    await expect(page.locator("#conn")).to_have_text("live")  # the dashboard's socket is not the one caught below
    async with page.expect_websocket() as socket:
        await page.goto(ui.url(f"/ui/jobs/{job_id}"))
    await expect(page.locator("#conn")).to_have_text("live")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    delivery = page.locator("#j-deliveries li.delivery")
    rows = delivery.locator("tbody tr")
    await expect(delivery).to_have_attribute("data-status", "pending")
    await expect(delivery).to_contain_text("Next attempt due")
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0).locator("td.code")).to_have_text("no answer")
    await expect(rows.nth(0)).to_contain_text("no complete answer within 0.5 s")
    await expect(rows.nth(0)).to_have_attribute("data-status", "failed")

    # Attempt 2 changes no job, so no job message tells the page; it follows anyway.
    await settled(await socket.value)
    jobq.clock.advance(80)
    await sender.run_until_idle()  # attempt 2: 500, and the schedule is used up: failed
    assert len(receiver.requests) == 2
    await expect(delivery).to_have_attribute("data-status", "failed")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1).locator("td.code")).to_have_text("500")
    await expect(rows.nth(1)).to_contain_text("answered 500")
    await expect(rows.nth(1)).to_contain_text(" ms")
    await expect(page.locator("#j-redeliver")).to_be_visible()
    assert navigations == [], "the page reloaded"
    await ui.screenshot("job-delivery-failed")

    # The dashboard counts the failed delivery, highlighted, and shows its alert.
    monitor = jobq.app[ALERTS]
    raised = await monitor.check()
    assert [a.kind for a in raised] == ["delivery_failed"]
    await page.goto(ui.url("/"))
    failed = page.locator('.dcount[data-delivery-status="failed"]')
    await expect(failed.locator(".dcount-n")).to_have_text("1")
    await expect(failed).to_have_class(re.compile(r"\bdcount-bad\b"))
    await expect(page.locator('.dcount[data-delivery-status="pending"]')).not_to_have_class(re.compile("dcount-bad"))
    alert = page.locator('#alerts li[data-kind="delivery_failed"]')
    await expect(alert).to_contain_text("webhook failed")
    await expect(alert.locator(".alert-message")).to_have_text(raised[0].message)
    await ui.screenshot("dashboard-delivery-failed")
    await alert.locator("a").click()
    await expect(page).to_have_url(ui.url(f"/ui/jobs/{job_id}"))

    # Redeliver: queued again at once, then sent; the panel follows without a reload.
    await page.click("#j-redeliver")
    await expect(page.locator("#j-deliveries-notice")).to_contain_text("queued (the same webhook-id)")
    await expect(delivery).to_have_attribute("data-status", "pending")
    await expect(delivery).to_contain_text("Redelivery due")
    await expect(page.locator("#j-actions li")).to_contain_text("redeliver by acme")
    await sender.run_until_idle()
    await expect(delivery).to_have_attribute("data-status", "delivered")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(2).locator("td.code")).to_have_text("200")
    await expect(rows.nth(2)).to_contain_text("redelivery")
    await expect(rows.nth(2)).to_have_attribute("data-status", "succeeded")
    ids = {headers["webhook-id"] for _, _, _, headers in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    await ui.screenshot("job-deliveries")
    assert [(a.kind, a.active) for a in await monitor.check()] == [("delivery_failed", False)]


async def test_a_refused_redeliver_says_why(ui: UI, jobq: Harness) -> None:
    job = await jobq.submit(type="fail", payload={"permanent": True}, webhookUrl="https://hooks.example.com/x")
    job_id = job["jobId"]
    await jobq.drain()

    settled = asyncio.Event()

    async def route(ws: WebSocketRoute) -> None:
        # The page stays live but does not hear of the retry below, so it
        # still offers Redeliver for a job that is no longer ended.
        server = ws.connect_to_server()
        metrics = 0

        def from_server(message: str | bytes) -> None:
            nonlocal metrics
            kind = json.loads(message).get("type")
            if kind == "metrics":
                metrics += 1
                if metrics == 2:  # what the page fetched when it went live has arrived
                    settled.set()
            if kind != "job":
                ws.send(message)

        server.on_message(from_server)

    await ui.login("acme")
    await ui.page.route_web_socket("**/ws*", route)
    await ui.page.goto(ui.url(f"/ui/jobs/{job_id}"))
    await expect(ui.page.locator("#conn")).to_have_text("live")
    await expect(ui.page.locator("#j-redeliver")).to_be_visible()
    await asyncio.wait_for(settled.wait(), WAIT_MS / 1000)
    response = await jobq.client.post(f"/jobs/{job_id}/retry", headers=jobq.headers())
    assert response.status == 200
    await ui.page.click("#j-redeliver")
    notice = ui.page.locator("#j-deliveries-notice")
    await expect(notice).to_have_text(
        f"Redeliver refused: job {job_id} is queued; only an ended job's webhook can be redelivered"
    )
    await expect(notice).to_have_class(re.compile("notice-error"))
    # The page looked again: the job is queued, so there is nothing to redeliver.
    await expect(ui.page.locator("#j-status")).to_have_text("queued")
    await expect(ui.page.locator("#j-redeliver")).to_be_hidden()


async def test_a_read_only_key_sees_no_redeliver_button(ui: UI, jobq: Harness) -> None:
    job_id = (await jobq.submit(type="echo", webhookUrl="https://hooks.example.com/x"))["jobId"]
    await jobq.drain()
    await ui.login("acme_read")
    await ui.page.goto(ui.url(f"/ui/jobs/{job_id}"))
    await expect(ui.page.locator("#j-status")).to_have_text("succeeded")
    await expect(ui.page.locator("#j-deliveries li.delivery")).to_have_attribute("data-status", "pending")
    await expect(ui.page.locator("#j-redeliver")).to_be_hidden()
    # And the server refuses anyway, whatever the page shows.
    status = await ui.page.evaluate(
        "async (id) => (await fetch(`/jobs/${id}/deliveries/redeliver`, {method: 'POST'})).status", job_id
    )
    assert status == 403


async def test_the_page_goes_to_login_when_its_key_is_removed(ui: UI, jobq: Harness) -> None:
    await ui.login("acme")
    await expect(ui.page.locator("#conn")).to_have_text("live")
    path = jobq.settings.tenants_file
    doc = TenantsDoc.read(path)
    removed = hash_key(jobq.key("acme"))
    doc.tenants["acme"]["keys"] = [k for k in doc.tenants["acme"]["keys"] if k["hash"] != removed]
    doc.write(path)
    jobq.clock.advance(1.5)  # the registry looks at the file at most once a (fake) second

    await expect(ui.page).to_have_url(re.compile(r"/login$"), timeout=5000)

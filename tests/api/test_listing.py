"""GET /jobs filters, search and cursor paging; POST /jobs/bulk."""

from __future__ import annotations

from tests.conftest import Harness


async def _list(jobq: Harness, query: str, who: str = "acme") -> dict:  # type: ignore[type-arg]
    response = await jobq.client.get(f"/jobs{query}", headers=jobq.headers(who))
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_newest_first_with_cursor_paging_over_every_job(jobq: Harness) -> None:
    ids = []
    for n in range(7):
        ids.append((await jobq.submit(payload={"n": n}))["jobId"])
        jobq.clock.advance(0.0005 if n % 2 else 0.002)  # some share a millisecond
    seen: list[str] = []
    cursor = None
    while True:
        page = await _list(jobq, "?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["jobs"]) <= 3
        seen.extend(j["jobId"] for j in page["jobs"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_filters_by_status_type_and_text(jobq: Harness) -> None:
    await jobq.submit(type="echo", payload={"customer": "Ada Lovelace"})
    await jobq.submit(type="fail", payload={"times": 1, "permanent": True, "message": "card declined"})
    await jobq.submit(type="sleep", payload={"seconds": 1}, delaySeconds=60)
    await jobq.drain()
    assert [j["type"] for j in (await _list(jobq, "?status=fatal"))["jobs"]] == ["fail"]
    assert len((await _list(jobq, "?status=fatal,succeeded"))["jobs"]) == 2
    assert [j["type"] for j in (await _list(jobq, "?type=sleep"))["jobs"]] == ["sleep"]
    assert [j["type"] for j in (await _list(jobq, "?q=ada%20LOVELACE"))["jobs"]] == ["echo"]
    assert [j["type"] for j in (await _list(jobq, "?q=declined"))["jobs"]] == ["fail"]
    assert (await _list(jobq, "?q=nothing-like-this"))["jobs"] == []
    assert (await _list(jobq, "", who="globex"))["jobs"] == []


async def test_bulk_cancel_by_filter_and_retry_by_ids(jobq: Harness) -> None:
    dead = [await jobq.submit(type="fail", payload={"times": 1, "permanent": True}) for _ in range(3)]
    for _ in range(2):
        await jobq.submit(delaySeconds=600)
    await jobq.drain()
    response = await jobq.client.post(
        "/jobs/bulk", json={"action": "cancel", "filter": {"status": "queued"}}, headers=jobq.headers()
    )
    assert await response.json() == {"matched": 2, "changed": 2}
    retried = await jobq.client.post(
        "/jobs/bulk",
        json={"action": "retry", "jobIds": [dead[0]["jobId"], dead[1]["jobId"], "no-such-job"]},
        headers=jobq.headers(),
    )
    assert await retried.json() == {"matched": 2, "changed": 2}
    assert (await jobq.store.counts("acme"))["queued"] == 2
    job = await jobq.get(dead[0]["jobId"])
    assert job["operatorActions"][-1]["actor"].endswith("(bulk)")


async def test_bulk_never_touches_another_tenant(jobq: Harness) -> None:
    theirs = await jobq.submit("globex", delaySeconds=600)
    response = await jobq.client.post(
        "/jobs/bulk", json={"action": "cancel", "jobIds": [theirs["jobId"]]}, headers=jobq.headers("acme")
    )
    assert await response.json() == {"matched": 0, "changed": 0}
    everything = await jobq.client.post(
        "/jobs/bulk", json={"action": "cancel", "filter": {}}, headers=jobq.headers("acme")
    )
    assert (await everything.json())["matched"] == 0
    assert (await jobq.get(theirs["jobId"], "globex"))["status"] == "queued"


async def test_rare_status_pages_newest_first_from_the_status_index(jobq: Harness) -> None:
    dead = []
    for n in range(40):
        if n % 10 == 3:
            dead.append((await jobq.submit(type="fail", payload={"times": 1, "permanent": True}))["jobId"])
        else:
            await jobq.submit(delaySeconds=600, payload={"n": n})
        jobq.clock.advance(0.001)
    await jobq.drain()
    seen: list[str] = []
    cursor = None
    while True:
        page = await _list(jobq, "?status=fatal&limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen.extend(j["jobId"] for j in page["jobs"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(dead))
    admin = await _list(jobq, "?status=fatal", who="admin")
    assert [j["jobId"] for j in admin["jobs"]] == list(reversed(dead))

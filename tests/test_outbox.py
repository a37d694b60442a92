"""The webhook outbox: a job that ends with a webhookUrl owes one delivery,
written in the same commit as the change that ended it."""

from __future__ import annotations

import errno
from pathlib import Path

from jobq.storage.jsonfile.files import decode_line
from tests.conftest import Harness, HarnessFactory
from tests.faults import JOURNAL, FaultyFS

HOOK = "https://hooks.example.com/jobq"


async def _deliveries(jobq: Harness, job_id: str, who: str = "acme") -> list[dict]:  # type: ignore[type-arg]
    response = await jobq.client.get(f"/jobs/{job_id}/deliveries", headers=jobq.headers(who))
    assert response.status == 200, await response.text()
    return (await response.json())["deliveries"]  # type: ignore[no-any-return]


async def test_each_ending_queues_one_delivery_with_its_event(jobq: Harness) -> None:
    ok = await jobq.submit(webhookUrl=HOOK)
    dead = await jobq.submit(type="fail", payload={"times": 1, "permanent": True}, webhookUrl=HOOK)
    parent = await jobq.submit(delaySeconds=60, webhookUrl=HOOK)
    child = await jobq.submit(dependsOn=[parent["jobId"]], webhookUrl=HOOK)
    quiet = await jobq.submit()
    await jobq.drain()
    await jobq.client.post(f"/jobs/{parent['jobId']}/cancel", headers=jobq.headers())

    expected = {
        ok["jobId"]: "job.succeeded",
        dead["jobId"]: "job.fatal",
        parent["jobId"]: "job.cancelled",
        child["jobId"]: "job.cancelled",
    }  # the child was cancelled with its dependency
    for job_id, event in expected.items():
        [delivery] = await _deliveries(jobq, job_id)
        assert delivery["event"] == event
        assert delivery["status"] == "pending"
        assert delivery["url"] == HOOK
        assert delivery["deliveryId"].startswith("msg_")
        assert delivery["attempts"] == []
        assert "body" not in delivery
    assert await _deliveries(jobq, quiet["jobId"]) == []
    stored = jobq.store.index.deliveries_of_job[ok["jobId"]][0]
    body = jobq.store.index.deliveries[stored].body
    assert body["type"] == "job.succeeded"
    assert body["data"]["jobId"] == ok["jobId"] and body["data"]["status"] == "succeeded"


async def test_the_delivery_is_in_the_same_journal_line_as_the_ending(jobq: Harness, data_dir: Path) -> None:
    job = await jobq.submit(webhookUrl=HOOK)
    await jobq.drain()
    lines = [
        decode_line(line)
        for path in sorted(data_dir.glob("jobs.journal.*"))  # noqa: ASYNC240 - a few small local files
        for line in path.read_bytes().split(b"\n")
        if line
    ]
    [ending] = [
        pairs
        for pairs in lines
        if pairs and any(k == f"job:{job['jobId']}" and v and v["status"] == "succeeded" for k, v in pairs)
    ]
    assert any(key.startswith("delivery:msg_") for key, _ in ending)


async def test_deliveries_survive_a_restart_with_their_id(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    job = await first.submit(webhookUrl=HOOK)
    await first.drain()
    [before] = await _deliveries(first, job["jobId"])
    await first.client.close()
    second = await make_harness()
    assert await _deliveries(second, job["jobId"]) == [before]


async def test_an_ending_that_is_not_written_leaves_no_delivery(make_harness: HarnessFactory) -> None:
    fs = FaultyFS()
    jobq = await make_harness(fs=fs)
    job = await jobq.submit(delaySeconds=60, webhookUrl=HOOK)
    fs.fail("fsync", errno.EIO, path=JOURNAL)
    response = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    assert response.status == 503
    assert jobq.store.index.deliveries == {}
    assert (await jobq.get(job["jobId"]))["status"] == "queued"


async def test_deliveries_are_private_and_purged_with_their_job(jobq: Harness) -> None:
    job = await jobq.submit(webhookUrl=HOOK)
    await jobq.drain()
    foreign = await jobq.client.get(f"/jobs/{job['jobId']}/deliveries", headers=jobq.headers("globex"))
    assert foreign.status == 404
    jobq.clock.advance(8 * 86400)
    assert await jobq.store.purge(jobq.clock.now(), 7 * 86400) == 1
    assert jobq.store.index.deliveries == {}
    gone = await jobq.client.get(f"/jobs/{job['jobId']}/deliveries", headers=jobq.headers())
    assert gone.status == 404

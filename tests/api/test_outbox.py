"""The webhook outbox: a job that ends with a webhookUrl owes one delivery,
written in the same commit as the change that ended it (the commit itself, in
the JSON journal, is checked in tests/backends/jsonfile/test_outbox_journal.py)."""

from __future__ import annotations

from tests.conftest import Harness, HarnessFactory

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
    [stored] = await jobq.store.deliveries(ok["jobId"], "acme")
    body = stored.body
    assert body["type"] == "job.succeeded"
    assert body["data"]["jobId"] == ok["jobId"] and body["data"]["status"] == "succeeded"


async def test_deliveries_survive_a_restart_with_their_id(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    job = await first.submit(webhookUrl=HOOK)
    await first.drain()
    [before] = await _deliveries(first, job["jobId"])
    await first.client.close()
    second = await make_harness()
    assert await _deliveries(second, job["jobId"]) == [before]


async def test_deliveries_are_private_and_purged_with_their_job(jobq: Harness) -> None:
    job = await jobq.submit(webhookUrl=HOOK)
    await jobq.drain()
    foreign = await jobq.client.get(f"/jobs/{job['jobId']}/deliveries", headers=jobq.headers("globex"))
    assert foreign.status == 404
    [delivery] = await jobq.store.deliveries(job["jobId"], "acme")
    jobq.clock.advance(8 * 86400)
    assert await jobq.store.purge(jobq.clock.now(), 7 * 86400) == 1
    assert await jobq.store.get_deliveries([delivery.delivery_id]) == []
    gone = await jobq.client.get(f"/jobs/{job['jobId']}/deliveries", headers=jobq.headers())
    assert gone.status == 404

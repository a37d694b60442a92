"""`waitingReason` counts the jobs really ahead in claim order."""

from __future__ import annotations

from tests.conftest import Harness


async def test_jobs_ahead_follows_claim_order(jobq: Harness) -> None:
    first = await jobq.submit()
    second = await jobq.submit()
    urgent = await jobq.submit(priority=3)
    assert first["waitingReason"] == "next in line"
    assert second["waitingReason"] == "1 job ahead"
    assert urgent["waitingReason"] == "next in line"
    assert (await jobq.get(first["jobId"]))["waitingReason"] == "1 job ahead"
    assert (await jobq.get(second["jobId"]))["waitingReason"] == "2 jobs ahead"

"""By default no tenant can hold every worker slot (issue 8, SPEC §4), and
`waitingReason` says truthfully why a job waits."""

from __future__ import annotations

from jobq.tenancy.tenants import DEFAULT_LIMITS
from tests.conftest import Harness, HarnessFactory


async def test_another_tenants_job_starts_while_one_tenant_has_a_backlog_of_long_jobs(jobq: Harness) -> None:
    assert DEFAULT_LIMITS.max_running < jobq.settings.worker_concurrency
    backlog = [await jobq.submit(type="sleep", payload={"seconds": 60}) for _ in range(12)]
    try:
        assert await jobq.worker.run_once() == DEFAULT_LIMITS.max_running
        waiting = await jobq.get(backlog[-1]["jobId"])
        assert waiting["waitingReason"] == f"tenant at maxRunning (4/{DEFAULT_LIMITS.max_running})"

        other = await jobq.submit("globex")
        assert other["waitingReason"] == "next in line"
        assert await jobq.worker.run_once() == 1
        assert (await jobq.get(other["jobId"], "globex"))["status"] in ("running", "succeeded")
    finally:
        await jobq.worker.stop(0)


async def test_a_job_waiting_for_a_free_slot_says_so(make_harness: HarnessFactory) -> None:
    h = await make_harness(worker_concurrency=2)
    try:
        await h.submit(type="sleep", payload={"seconds": 60})
        await h.submit("globex", type="sleep", payload={"seconds": 60})
        assert await h.worker.run_once() == 2
        queued = await h.submit()
        assert queued["waitingReason"] == "all worker slots busy (2/2)"
    finally:
        await h.worker.stop(0)

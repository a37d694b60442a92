"""The worker when the journal refuses to write a claim: the handler is
stopped and the job runs later, as if the claim never happened."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from jobq.core.models import Job
from jobq.worker.handlers import Context, Registry
from tests.conftest import HarnessFactory
from tests.support.faults import JOURNAL, FaultyFS


async def test_claim_that_cannot_be_written_stops_the_handler_and_the_job_runs_later(
    make_harness: HarnessFactory, registry: Registry
) -> None:
    started: list[int] = []
    release = asyncio.Event()

    @registry.handler("wait")
    async def wait(job: Job, ctx: Context) -> Any:
        started.append(ctx.attempt)
        await release.wait()
        return "done"

    fs = FaultyFS()
    jobq = await make_harness(fs=fs)
    job = await jobq.submit(type="wait")
    fault = fs.fail("fsync", errno.EIO, path=JOURNAL)
    await jobq.worker.run_once()
    assert started == []  # the handler task has not run yet; the claim's write is pending
    await asyncio.sleep(0.05)
    assert fault.fired == 1
    assert (await jobq.get(job["jobId"]))["status"] == "queued"  # the claim was undone
    assert jobq.worker.active == 0  # and its handler stopped

    release.set()
    await asyncio.wait_for(jobq.drain(), timeout=5)
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1  # the lost claim left no trace...
    assert started == [1, 1]  # ...but its handler had begun: at-least-once, same attempt number

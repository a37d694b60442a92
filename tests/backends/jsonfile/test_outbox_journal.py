"""The webhook outbox in the JSON store: the delivery is written in the same
journal line as the change that ended its job, or not at all."""

from __future__ import annotations

import errno
from pathlib import Path

from jobq.storage.jsonfile.files import decode_line
from tests.backends.jsonfile.support import json_store
from tests.conftest import Harness, HarnessFactory
from tests.support.faults import JOURNAL, FaultyFS

HOOK = "https://hooks.example.com/jobq"


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


async def test_an_ending_that_is_not_written_leaves_no_delivery(make_harness: HarnessFactory) -> None:
    fs = FaultyFS()
    jobq = await make_harness(fs=fs)
    job = await jobq.submit(delaySeconds=60, webhookUrl=HOOK)
    fs.fail("fsync", errno.EIO, path=JOURNAL)
    response = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    assert response.status == 503
    assert json_store(jobq).index.deliveries == {}
    assert (await jobq.get(job["jobId"]))["status"] == "queued"

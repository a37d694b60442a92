"""jobs.json is readable and editable by hand: a reformatted file still loads."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.conftest import HarnessFactory


async def test_a_hand_formatted_jobs_json_still_starts(make_harness: HarnessFactory, data_dir: Path) -> None:
    jobq = await make_harness()
    ids = [(await jobq.submit(payload={"n": n}))["jobId"] for n in range(3)]
    await jobq.client.close()
    folded = await make_harness()  # opening folds the journal into jobs.json
    await folded.client.close()
    snapshot = orjson.loads((data_dir / "jobs.json").read_bytes())
    assert {pair[0] for pair in snapshot["records"]} == {f"job:{i}" for i in ids}
    (data_dir / "jobs.json").write_bytes(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2))
    again = await make_harness()
    assert [(await again.get(i))["payload"] for i in ids] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_a_key_remembered_before_answers_were_kept_as_bytes_still_replays(
    make_harness: HarnessFactory, data_dir: Path
) -> None:
    """Records of earlier versions hold a key's answer as `statusCode` and the
    job views (`bodies`); a replay after the upgrade answers as the first time."""
    jobq = await make_harness()
    headers = jobq.headers(**{"Idempotency-Key": "k-1"})
    single = await jobq.client.post("/jobs", json={"type": "echo", "payload": {"n": 1}}, headers=headers)
    first_single = await single.json()
    batch_headers = jobq.headers(**{"Idempotency-Key": "k-2"})
    batch_body = {"jobs": [{"type": "echo", "payload": {"n": 2}}, {"type": "echo", "payload": {"n": 3}}]}
    batch = await jobq.client.post("/jobs/batch", json=batch_body, headers=batch_headers)
    first_batch = await batch.json()
    await jobq.client.close()
    await (await make_harness()).client.close()  # folds the journal into jobs.json
    snapshot = orjson.loads((data_dir / "jobs.json").read_bytes())
    for pair in snapshot["records"]:
        if pair[0].startswith("idem:"):
            record = pair[1]
            answer = record.pop("answer")
            record["statusCode"] = 201
            record["bodies"] = answer["jobs"] if record["route"].endswith("/batch") else [answer]
    (data_dir / "jobs.json").write_bytes(orjson.dumps(snapshot))
    again = await make_harness()
    replayed = await again.client.post("/jobs", json={"type": "echo", "payload": {"n": 1}}, headers=headers)
    assert replayed.status == 201 and replayed.headers["Idempotent-Replayed"] == "true"
    assert await replayed.json() == first_single
    assert replayed.headers["Location"] == f"/jobs/{first_single['jobId']}"
    replayed_batch = await again.client.post("/jobs/batch", json=batch_body, headers=batch_headers)
    assert await replayed_batch.json() == first_batch

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

"""jobs.json is read line by line when laid out as jobq writes it, and as a
whole document otherwise; both readings agree, and damage is never accepted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from errors import CorruptStore
from journal import DurableLog
from tests.conftest import Harness, HarnessFactory


async def _snapshot_with_jobs(make_harness: HarnessFactory) -> tuple[Harness, list[str]]:
    jobq = await make_harness()
    ids = [(await jobq.submit(payload={"n": n, "text": "a,\nb"}))["jobId"] for n in range(5)]
    await jobq.client.close()  # closes the store
    folded = await make_harness()  # opening folds the journal into jobs.json
    await folded.client.close()
    return folded, ids


async def test_line_reading_and_whole_reading_agree(make_harness: HarnessFactory, data_dir: Path) -> None:
    _, ids = await _snapshot_with_jobs(make_harness)
    log = DurableLog(data_dir)
    records, _, _ = log.read_all()
    assert len(log._snapshot_entries) == len(records) == 5  # every record came from its own line
    pretty = orjson.loads((data_dir / "jobs.json").read_bytes())
    (data_dir / "jobs.json").write_bytes(orjson.dumps(pretty, option=orjson.OPT_INDENT_2))
    whole, _, _ = DurableLog(data_dir).read_all()
    assert whole == records
    assert {k.removeprefix("job:") for k in records if k.startswith("job:")} == set(ids)

    again = await make_harness()  # a hand-formatted jobs.json still starts
    assert (await again.get(ids[0]))["payload"] == {"n": 0, "text": "a,\nb"}


async def test_a_missing_comma_between_records_is_refused(make_harness: HarnessFactory, data_dir: Path) -> None:
    await _snapshot_with_jobs(make_harness)
    lines = (data_dir / "jobs.json").read_bytes().split(b"\n")
    assert lines[1].endswith(b",")
    lines[1] = lines[1][:-1]
    damaged = b"\n".join(lines)
    (data_dir / "jobs.json").write_bytes(damaged)
    with pytest.raises(CorruptStore, match=r"jobs\.json"):
        DurableLog(data_dir).read_all()
    assert (data_dir / "jobs.json").read_bytes() == damaged

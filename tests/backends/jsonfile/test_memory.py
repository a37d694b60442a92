"""Memory per retained job (issue 8): what a job carries as opaque JSON is held
as its encoded bytes, so a payload of many small objects costs about its
serialized size, in the process that took it and after a restart.

Measured with tracemalloc in a fresh interpreter (`probe`), so nothing of the
test runner's own allocations is counted. A job's "serialized size" is the
length of its stored record (what the journal and jobs.json hold for it).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from jobq.storage.protocol import LeaseRef, RunningLimits

if TYPE_CHECKING:
    from jobq.core.models import Job

ROOT = Path(__file__).resolve().parents[3]  # the repository root
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def NO_ANSWER(jobs: object, reasons: object) -> bytes:  # noqa: N802
    return b"{}"  # the answer is not what these tests measure


def API_ANSWER(jobs: list[Job], reasons: list[str | None]) -> bytes:  # noqa: N802
    return orjson.dumps(jobs[0].to_api(reasons[0]))  # as POST /jobs answers: what a key remembers


def many_objects(n: int) -> dict[str, Any]:
    """About 60 KB of JSON made of 7,500 one-key objects, built fresh each call."""
    return {"n": n, "items": [{"a": i % 10} for i in range(7_500)]}


def nested_lists(n: int) -> dict[str, Any]:
    """About 60 KB of JSON made of small nested lists."""
    return {"n": n, "rows": [[i % 10, [i % 7]] for i in range(6_000)]}


def small(n: int) -> dict[str, Any]:
    return {"n": n, "to": "someone@example.com"}


PAYLOADS = {"many_objects": many_objects, "nested_lists": nested_lists, "small": small}


async def _probe(
    data_dir: Path, kind: str, count: int, finish: bool, idem: bool, webhook: bool = False
) -> dict[str, float]:
    from jobq.core.models import NewJob
    from jobq.core.outcomes import Succeeded
    from jobq.rules.transitions import RetryPolicy
    from jobq.storage.jsonfile.store import JsonStore
    from jobq.storage.protocol import IdemRequest

    make = PAYLOADS[kind]

    def new_store() -> JsonStore:
        return JsonStore(data_dir, retry=RetryPolicy())

    def traced() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    store = new_store()
    await store.open(NOW)
    base = traced()
    claimed = None
    for n in range(count):
        key = IdemRequest(f"key-{n}", f"fingerprint-{n}", "/jobs") if idem else None
        hook = "https://hooks.example/jobq" if webhook else None
        new = NewJob(type="echo", payload=make(n), webhook_url=hook)
        await store.submit(
            "acme", [new], key, NOW, max_queued=1_000_000, limits=RunningLimits({}, 1_000_000), encode=API_ANSWER
        )
    if finish:
        claimed = await store.claim("w1", count, lease_seconds=60.0, limits=RunningLimits({}, 1_000_000), now=NOW)
        await claimed.durable
        for job in claimed.jobs:  # what the echo handler does: return its payload
            await store.finish(LeaseRef(job.job_id, job.attempts), Succeeded(job.payload), NOW)
    live = traced() - base
    jobs = list(store.index.jobs.values())
    assert len(jobs) == count
    record_bytes = sum(len(orjson.dumps(job.to_record())) for job in jobs) / count
    # An Idempotency-Key's record stores the answer, the job as first shown, again.
    record_bytes += sum(len(orjson.dumps(r.to_record())) for r in store.index.idem.values()) / count
    # A webhook's delivery holds the ended job as its body.
    record_bytes += sum(len(orjson.dumps(d.to_record())) for d in store.index.deliveries.values()) / count
    del jobs, claimed
    await store.close()
    del store
    base = traced()
    tracemalloc.reset_peak()
    store = new_store()
    await store.open(NOW)
    restarted = traced() - base
    peak = tracemalloc.get_traced_memory()[1] - base
    assert len(store.index.jobs) == count
    await store.close()
    return {
        "record": record_bytes,
        "live": live / count,
        "restarted": restarted / count,
        "restart_peak": peak / count,
    }


def probe(data_dir: str, kind: str, count: int, finish: bool, idem: bool, webhook: bool = False) -> None:
    """Entry point of the child interpreter; prints its measures as JSON."""
    print(json.dumps(asyncio.run(_probe(Path(data_dir), kind, count, finish, idem, webhook))))


@dataclass(frozen=True)
class Measure:
    record: float  # bytes of one job's stored JSON record
    live: float  # bytes per job while the process that took them runs
    restarted: float  # bytes per job after a restart
    restart_peak: float  # bytes per job at the peak of the restart (the snapshot decoded whole)

    def __str__(self) -> str:
        return (
            f"record {self.record:,.0f} B, live {self.live:,.0f} B ({self.live / self.record:.1f}x), "
            f"after restart {self.restarted:,.0f} B ({self.restarted / self.record:.1f}x), "
            f"restart peak {self.restart_peak:,.0f} B ({self.restart_peak / self.record:.1f}x)"
        )


def measure(
    tmp_path: Path, kind: str, count: int, finish: bool = False, idem: bool = False, webhook: bool = False
) -> Measure:
    args = f"{str(tmp_path)!r}, {kind!r}, {count}, {finish}, {idem}, {webhook}"
    code = f"from tests.backends.jsonfile.test_memory import probe; probe({args})"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=100, check=False
    )
    assert out.returncode == 0, out.stderr
    return Measure(**json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("kind", ["many_objects", "nested_lists"])
def test_a_payload_of_many_small_objects_costs_a_small_multiple_of_its_size(tmp_path: Path, kind: str) -> None:
    m = measure(tmp_path, kind, 30)
    print(kind, m)
    assert m.record > 40_000
    assert m.live < 4 * m.record, m
    assert m.restarted < 4 * m.record, m
    # The snapshot is decoded a record at a time, never whole (that cost 27x).
    assert m.restart_peak < 8 * m.record, m


def test_a_result_of_many_small_objects_costs_a_small_multiple_of_its_size(tmp_path: Path) -> None:
    m = measure(tmp_path, "many_objects", 20, finish=True)
    print("succeeded, result = payload:", m)
    assert m.record > 100_000  # the payload and the result
    assert m.live < 4 * m.record, m
    assert m.restarted < 4 * m.record, m


def test_an_idempotency_key_does_not_keep_a_decoded_copy_of_the_payload(tmp_path: Path) -> None:
    m = measure(tmp_path, "many_objects", 30, idem=True)
    print("with Idempotency-Key:", m)
    assert m.record > 120_000  # the job's record and the key's
    assert m.live < 4 * m.record, m
    assert m.restarted < 4 * m.record, m


def test_a_webhook_delivery_does_not_keep_a_decoded_copy_of_the_job(tmp_path: Path) -> None:
    m = measure(tmp_path, "many_objects", 20, finish=True, webhook=True)
    print("succeeded with a webhook:", m)
    assert m.record > 200_000  # the job's record and its delivery's, each with payload and result
    assert m.live < 4 * m.record, m
    assert m.restarted < 4 * m.record, m


def test_a_small_job_stays_small(tmp_path: Path) -> None:
    m = measure(tmp_path, "small", 2_000)
    print("small", m)
    assert m.live < 8 * m.record, m
    assert m.restarted < 8 * m.record, m


# ---- stored bytes per tenant, for maxStoredBytes ---------------------------


def _job(tenant: str, payload: dict[str, Any], **changes: Any) -> Job:
    from jobq.core.ids import new_id
    from jobq.core.models import NewJob
    from jobq.rules.submission import build_jobs

    spec = NewJob(type="echo", payload=payload, webhook_url=changes.pop("webhook_url", None))
    [job] = build_jobs(tenant, [spec], NOW, lambda _: None, new_id, changes.pop("idempotency_key", None))
    return job.evolve(**changes) if changes else job


def _versions() -> list[Job]:
    from jobq.core.ids import new_id
    from jobq.core.models import Attempt, AttemptStatus, OperatorAction, Status

    def attempt(n: int, error: str | None) -> Attempt:
        return Attempt(new_id(), new_id(), n, AttemptStatus.FAILED, "worker-1", NOW, error, NOW)

    return [
        _job("acme", {}),
        _job("acme", small(1), idempotency_key="order-7", webhook_url="https://example.com/hook"),
        _job("acme", many_objects(1)),
        _job("acme", nested_lists(1), depends_on=["b8a7c3f4-0000-4000-8000-000000000000"] * 3),
        _job(
            "acme",
            small(2),
            status=Status.SUCCEEDED,
            result=many_objects(2),
            attempts=1,
            attempt_history=[attempt(1, None)],
            started_at=NOW,
            finished_at=NOW,
            progress=1.0,
            progress_message="all done",
        ),
        _job(
            "acme",
            small(3),
            status=Status.FATAL,
            attempts=4,
            last_error="RuntimeError: " + "x" * 1_900,
            attempt_history=[attempt(n, "RuntimeError: " + "x" * 1_900) for n in range(1, 5)],
            operator_actions=[OperatorAction("retry", "admin:ops", NOW), OperatorAction("cancel", "acme", NOW)],
            finished_at=NOW,
        ),
    ]


def test_stored_size_is_close_to_the_length_of_the_stored_record() -> None:
    for job in _versions():
        record = len(orjson.dumps(job.to_record()))
        assert abs(job.stored_size - record) <= max(0.02 * record, 20), (job.stored_size, record, job)


def test_stored_bytes_follow_put_replace_and_remove() -> None:
    from jobq.storage.jsonfile.index import JobIndex

    index = JobIndex(aging_seconds=300.0)
    assert index.stored_bytes("acme") == 0
    a, b = _job("acme", small(1)), _job("acme", many_objects(1))
    other = _job("globex", small(2))
    for job in (a, b, other):
        index.put(job)
    assert index.stored_bytes("acme") == a.stored_size + b.stored_size
    assert index.stored_bytes("globex") == other.stored_size
    done = a.evolve(result=many_objects(3))  # a replace: the old version stops counting
    assert done.stored_size > a.stored_size + 50_000
    index.put(done)
    assert index.stored_bytes("acme") == done.stored_size + b.stored_size
    index.put(done)  # the same version again changes nothing
    assert index.stored_bytes("acme") == done.stored_size + b.stored_size
    assert index.remove(b.job_id) is b
    assert index.remove(b.job_id) is None
    assert index.stored_bytes("acme") == done.stored_size
    index.remove(done.job_id)
    assert index.stored_bytes("acme") == 0
    assert index.stored_bytes("globex") == other.stored_size


async def test_stored_bytes_are_the_same_after_a_restart(tmp_path: Path) -> None:
    from jobq.core.models import NewJob
    from jobq.core.outcomes import Succeeded
    from jobq.rules.transitions import RetryPolicy
    from jobq.storage.jsonfile.store import JsonStore

    def new_store() -> JsonStore:
        return JsonStore(tmp_path, retry=RetryPolicy())

    store = new_store()
    await store.open(NOW)
    for n, tenant in enumerate(["acme", "acme", "acme", "globex"]):
        await store.submit(
            tenant,
            [NewJob(type="echo", payload=many_objects(n))],
            None,
            NOW,
            max_queued=100,
            limits=RunningLimits({}, 100),
            encode=NO_ANSWER,
        )
    claimed = await store.claim("w1", 2, lease_seconds=60.0, limits=RunningLimits({}, 1_000_000), now=NOW)
    await claimed.durable
    for job in claimed.jobs:
        await store.finish(LeaseRef(job.job_id, job.attempts), Succeeded(job.payload), NOW)
    before = {t: store.index.stored_bytes(t) for t in ("acme", "globex")}
    assert before["acme"] > 3 * 60_000 and before["globex"] > 60_000
    assert sum(before.values()) == sum(job.stored_size for job in store.index.jobs.values())
    await store.close()

    again = new_store()
    await again.open(NOW)
    try:
        assert {t: again.index.stored_bytes(t) for t in ("acme", "globex")} == before
    finally:
        await again.close()


# ---- the encoded form is the same JSON as before ---------------------------


def test_the_stored_record_and_the_api_body_are_the_json_of_the_decoded_values() -> None:
    for job in _versions():
        record = dict(job.to_record())
        as_before = {**record, "payload": job.payload, "result": job.result}
        assert orjson.dumps(record) == orjson.dumps(as_before)
        again = type(job).from_record(orjson.loads(orjson.dumps(record)))
        assert again.payload_json == job.payload_json and again.result_json == job.result_json
        assert orjson.dumps(again.to_record()) == orjson.dumps(record)
        api = orjson.loads(orjson.dumps(job.to_api("why", with_history=True)))
        assert api["payload"] == job.payload and api["result"] == job.result and api["waitingReason"] == "why"


def test_a_payload_is_decoded_afresh_for_each_reader() -> None:
    job = _job("acme", {"seconds": 1, "tags": ["a"]})
    job.payload["tags"].append("changed")
    assert job.payload == {"seconds": 1, "tags": ["a"]}
    assert job.evolve(payload={"x": 1}).payload == {"x": 1}
    assert job.evolve(result=None).result_json is None


def test_q_searches_the_encoded_payload_without_regard_to_case() -> None:
    from jobq.rules.listing import text_contains

    ascii_text = orjson.dumps({"To": "Someone@Example.COM"})
    assert text_contains(ascii_text, "example.com")
    assert text_contains(ascii_text, '"to":')
    assert not text_contains(ascii_text, "élan")
    accented = orjson.dumps({"name": "ÉLAN Vital"})
    assert text_contains(accented, "élan")
    assert text_contains(accented, "vital")
    assert not text_contains(accented, "elan")


def test_the_timestamp_cache_stays_bounded() -> None:
    from jobq.core import timefmt

    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(timefmt.FORMATTED_CACHE_SIZE * 3):
        timefmt.format_ts(start.replace(microsecond=0) + timedelta(milliseconds=n))
        assert len(timefmt._formatted) <= timefmt.FORMATTED_CACHE_SIZE

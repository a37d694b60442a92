"""Webhooks and the drain rate (SPEC §9, §12; issue 4: "a hanging receiver
does not change the drain rate").

Like the `drain` benchmark (queue the jobs with the worker off, restart with
concurrency 5, rate = jobs / (last finishedAt - first startedAt)), three ways
and a control, each on a fresh server:

- no webhookUrl (the baseline);
- every job's webhookUrl at a *hanging* receiver, which reads the request and
  then sleeps far past the sender's 15 s timeout without answering;
- every job's webhookUrl at a fast receiver, which answers 204 at once;
- a control: the hanging receiver's jobs with the sender switched off
  (JOBQ_WEBHOOK_CONCURRENCY=0), so every ending still writes its delivery to
  the outbox but nothing is sent. Against it, the hanging receiver's figure
  shows what the sender and the receiver cost, apart from what it costs a job
  to have a webhook at all.

All servers run with JOBQ_ALLOW_PRIVATE_URLS=true (the baseline too, so the
variants differ only in the webhookUrl), the sender's other settings at their
defaults (15 s timeout, 32 sends in flight, 8 for one tenant).

The receiver is an aiohttp server on 127.0.0.1 in its own process
(`python -m bench.hook_receiver hang|fast`), not in this one: this
process's event loop polls the server during the drain, and a fast receiver
answering thousands of POSTs a second on the same loop would both delay those
polls and, worse, be delayed by them, holding the sender's slots longer than
a real receiver would and so measuring the bench, not jobq. In its own
process its CPU is also counted apart (reported in the notes). On this
machine it still competes with the server for the cores, as any receiver on
the same host would. It prints its port, then serves until its stdin closes
(this process ends or stops it), SIGTERM, or `RECEIVER_LIFETIME_SECONDS`,
whichever comes first, so it never outlives the benchmark.

The variants run in `ROUNDS` rounds, each round in a rotated order, and each
figure is the median of its rounds: a drain of 2,000 to 20,000 no-op jobs
takes 0.2 to 3 s here, and one run of it is noisy.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from bench.client import BATCH_SIZE, ECHO_JOB, JSON_HEADERS, Api, api_for, parse_ts, wait_until_drained
from bench.hook_receiver import FAST, HANG, receiver_for
from bench.report import Row
from bench.server import temp_server
from bench.stats import count, rate

if TYPE_CHECKING:
    from bench.scenarios import Plan

WORKER_CONCURRENCY = 5  # as the `drain` benchmark
SLOWDOWN_LIMIT = 0.10  # a hanging receiver may cost at most this much of the drain rate (vs the control)
ROUNDS = 3
SERVER_ENV = {"JOBQ_ALLOW_PRIVATE_URLS": "true"}  # the receiver is on 127.0.0.1
SENDER_TIMEOUT_SECONDS = 15.0  # JOBQ_WEBHOOK_TIMEOUT_SECONDS, its default
DRAIN_POLL_SECONDS = 0.1
CATCH_UP_SECONDS = 60.0  # after the drain, how long to wait for the fast receiver's deliveries


# ---- one drain -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity, a dict key
class Variant:
    label: str
    receiver: str | None  # HANG, FAST, or None: jobs without webhookUrl
    env: dict[str, str] = field(default_factory=dict)  # more server settings, over SERVER_ENV


BASELINE = Variant("no webhookUrl", None)
HANGING = Variant("webhookUrl at a hanging receiver (never answers within the 15 s timeout)", HANG)
FAST_204 = Variant("webhookUrl at a fast receiver (204 at once)", FAST)
SENDER_OFF = Variant(
    "control: webhookUrl at the hanging receiver, sender off (JOBQ_WEBHOOK_CONCURRENCY=0)", HANG,
    {"JOBQ_WEBHOOK_CONCURRENCY": "0"},
)
VARIANTS = (BASELINE, HANGING, FAST_204, SENDER_OFF)


@dataclass
class Drain:
    """What one drain measured."""

    per_second: float
    seconds: float  # last finishedAt - first startedAt
    polled_seconds: float  # /healthz ready to none unfinished
    server_cpu: float  # seconds, over the polled drain
    at_drain: dict[str, int]  # the tenant's deliveries by status when none was unfinished
    received: int = 0  # POSTs the receiver had read by then
    hanging: int = 0  # of them, still unanswered
    receiver_cpu: float = 0.0  # seconds, over the polled drain
    caught_up: float | None = None  # seconds after the drain until none was pending (None: not within the cap)
    after_catch_up: dict[str, int] = field(default_factory=dict)


async def fill(api: Api, total: int, webhook_url: str | None) -> None:
    """`total` echo jobs in batches, each with `webhook_url` if given."""
    job = ECHO_JOB if webhook_url is None else {**ECHO_JOB, "webhookUrl": webhook_url}
    for start in range(0, total, BATCH_SIZE):
        body = orjson.dumps({"jobs": [job] * min(BATCH_SIZE, total - start)})
        async with api.session.post(f"{api.url}/jobs/batch", data=body, headers=JSON_HEADERS) as response:
            if response.status != 201:
                raise RuntimeError(f"POST /jobs/batch: {response.status} {(await response.read())[:300]!r}")


async def deliveries(api: Api) -> dict[str, int]:
    """The tenant's deliveries by status (GET /metrics)."""
    async with api.session.get(f"{api.url}/metrics") as response:
        if response.status != 200:
            raise RuntimeError(f"GET /metrics: {response.status}")
        document: dict[str, Any] = orjson.loads(await response.read())
    found: dict[str, int] = document["deliveries"]
    return found


async def wait_until_delivered(api: Api, drained: float) -> tuple[float | None, dict[str, int]]:
    """Poll until no delivery is pending, at most `CATCH_UP_SECONDS`: (seconds
    after `drained` it took, or None if it did not; the counts then)."""
    deadline = time.perf_counter() + CATCH_UP_SECONDS
    while True:
        found = await deliveries(api)
        if not found["pending"]:
            return time.perf_counter() - drained, found
        if time.perf_counter() > deadline:
            return None, found
        await asyncio.sleep(DRAIN_POLL_SECONDS)


async def drain_once(plan: Plan, variant: Variant) -> Drain:
    """Queue `plan.drain_jobs` echo jobs with the worker off, restart with
    concurrency 5 and measure how fast they all succeed."""
    total = plan.drain_jobs
    # The receiver is the inner context, so it stops first: a hanging one's
    # connections drop and the server then stops at once instead of giving
    # the sends in flight their grace period.
    async with temp_server({**SERVER_ENV, **variant.env}) as server, receiver_for(variant.receiver) as hook:
        await server.start(0)
        async with api_for(server) as api:
            await fill(api, total, hook.url if hook else None)
        await server.stop()
        await server.start(WORKER_CONCURRENCY)
        ready, cpu, hook_cpu = time.perf_counter(), server.cpu_seconds(), hook.cpu_seconds() if hook else 0.0
        async with api_for(server) as api:
            drained = await wait_until_drained(api)
            cpu = server.cpu_seconds() - cpu
            hook_cpu = hook.cpu_seconds() - hook_cpu if hook else 0.0
            at_drain = await deliveries(api)
            seen = await hook.stats() if hook else {"received": 0, "hanging": 0}
            jobs = await api.all_jobs("succeeded")
            caught_up, after = None, at_drain
            if variant.receiver == FAST:
                caught_up, after = await wait_until_delivered(api, drained)
    if len(jobs) != total:
        raise RuntimeError(f"{total} jobs were queued but {len(jobs)} succeeded")
    first = min(parse_ts(job["startedAt"]) for job in jobs)
    last = max(parse_ts(job["finishedAt"]) for job in jobs)
    seconds = (last - first).total_seconds()
    return Drain(
        rate(total, seconds), seconds, drained - ready, cpu, at_drain, seen["received"], seen["hanging"],
        hook_cpu, caught_up, after,
    )


# ---- the scenario ----------------------------------------------------------------


def order(round_number: int) -> list[Variant]:
    """The variants rotated by the round, so none always runs first."""
    shift = round_number % len(VARIANTS)
    return [*VARIANTS[shift:], *VARIANTS[:shift]]


def deliveries_note(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {count(n)}" for status, n in counts.items())


def variant_notes(variant: Variant, runs: list[Drain], baseline: float, total: int) -> str:
    median = statistics.median(run.per_second for run in runs)
    each = ", ".join(f"{count(run.per_second)}" for run in runs)
    cpu = ", ".join(f"{run.server_cpu / run.polled_seconds:.0%}" for run in runs)
    per_job = statistics.median(run.server_cpu for run in runs) / total * 1e6
    notes = [
        f"{median / baseline:.3f}x the no-webhook rate" if variant is not BASELINE else "the baseline",
        f"median of {len(runs)} rounds ({each} jobs/s)",
        f"drain {statistics.median(run.seconds for run in runs):.2f} s",
        # CPU per job is less shaken than the rate by other load on the machine.
        f"server CPU over the drain (polled): {cpu}, {per_job:.0f} µs a job (median)",
    ]
    last = runs[-1]
    if variant.receiver is not None:
        notes.append(
            f"receiver CPU {statistics.median(run.receiver_cpu for run in runs):.2f} s a drain; "
            f"at the drain's end (last round): deliveries {deliveries_note(last.at_drain)}; "
            f"the receiver had read {count(last.received)} POSTs, {count(last.hanging)} of them still unanswered"
        )
    if variant is HANGING:
        notes.append(
            f"the drain is shorter than the {SENDER_TIMEOUT_SECONDS:g} s timeout, so the hung sends held "
            "their slots throughout"
            if max(run.polled_seconds for run in runs) < SENDER_TIMEOUT_SECONDS
            else "some hung sends timed out during the drain"
        )
    if variant.receiver == FAST:
        caught = [run.caught_up for run in runs]
        if all(c is not None for c in caught):
            after = statistics.median(c for c in caught if c is not None)
            notes.append(
                f"all {count(total)} delivered {after:.1f} s (median) after the drain: deliveries "
                f"{deliveries_note(last.after_catch_up)}"
            )
        else:
            notes.append(
                f"not all delivered within {CATCH_UP_SECONDS:g} s after the drain (last round: deliveries "
                f"{deliveries_note(last.after_catch_up)})"
            )
    return "; ".join(notes)


async def webhook_drain(plan: Plan) -> list[Row]:
    runs: dict[Variant, list[Drain]] = {variant: [] for variant in VARIANTS}
    for round_number in range(ROUNDS):
        for variant in order(round_number):
            runs[variant].append(await drain_once(plan, variant))
    medians = {variant: statistics.median(run.per_second for run in found) for variant, found in runs.items()}
    baseline = medians[BASELINE]
    total = plan.drain_jobs
    rows = [
        Row(
            "webhook drain: queued echo jobs run to succeeded",
            f"{count(total)} jobs, concurrency {WORKER_CONCURRENCY}, {variant.label}",
            f"{count(medians[variant])} jobs/s",
            notes=(
                "rate = jobs / (last finishedAt - first startedAt); "
                + variant_notes(variant, runs[variant], baseline, total)
            ),
        )
        for variant in VARIANTS
    ]
    slowdown = 1 - medians[HANGING] / medians[SENDER_OFF]
    rows.append(Row(
        f"hanging receiver: drain within {SLOWDOWN_LIMIT:.0%} of the same jobs with nothing sent",
        f"median of {ROUNDS} rounds each, {count(total)} jobs",
        f"{slowdown:+.1%}", target=f"slowdown ≤ {SLOWDOWN_LIMIT:.0%}", met=slowdown <= SLOWDOWN_LIMIT,
        notes=(
            "1 - rate with a hanging receiver / rate of the sender-off control (the same jobs and outbox writes, "
            "nothing sent): what the receiver hanging costs the workers; a negative figure is noise in jobq's favour"
        ),
    ))
    rows.append(Row(
        "what a webhook costs a job (the outbox record written with its ending)",
        f"median of {ROUNDS} rounds each, {count(total)} no-op jobs",
        f"{1 - medians[SENDER_OFF] / baseline:+.1%}",
        notes=(
            "1 - rate of the sender-off control / rate without webhookUrl; with a hanging receiver "
            f"{1 - medians[HANGING] / baseline:+.1%}, with a fast one (sends on the same event loop) "
            f"{1 - medians[FAST_204] / baseline:+.1%}; a real handler's own work dilutes this"
        ),
    ))
    return rows

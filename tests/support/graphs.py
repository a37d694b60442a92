"""Big dependency graphs for the tests of cascades: chains and fan-outs
10,000 jobs deep or wide, submitted straight to the store in chunks."""

from __future__ import annotations

from jobq.core.models import NewJob
from tests.conftest import Harness, HarnessFactory, store_submit

DEEP = 10_000
CHUNK = 1000


async def restart(h: Harness, make_harness: HarnessFactory) -> Harness:
    await h.client.close()
    return await make_harness()


async def chain(h: Harness, length: int, *, head: NewJob | None = None, tenant: str = "acme") -> list[str]:
    """`length` jobs, each depending on the one before (the first on nothing)."""
    ids: list[str] = []
    while len(ids) < length:
        specs = []
        for n in range(len(ids), min(length, len(ids) + CHUNK)):
            before = (ids[-1],) if n == len(ids) and ids else ((f"r{n - 1}",) if n > len(ids) else ())
            spec = head if n == 0 and head is not None else NewJob(type="echo", payload={"n": n})
            specs.append(NewJob(spec.type, spec.payload, expires_at=spec.expires_at, depends_on=before, ref=f"r{n}"))
        result = await store_submit(h.store, tenant, specs, h.clock.now(), max_queued=10 * DEEP)
        ids.extend(result.job_ids)
    return ids


async def fan_out(h: Harness, width: int) -> tuple[str, list[str]]:
    """A head and `width` jobs that each depend on it alone."""
    [head] = (await store_submit(h.store, "acme", [NewJob("echo", {})], h.clock.now(), max_queued=10 * DEEP)).job_ids
    leaves: list[str] = []
    while len(leaves) < width:
        specs = [NewJob("echo", {"n": n}, depends_on=(head,)) for n in range(min(CHUNK, width - len(leaves)))]
        result = await store_submit(h.store, "acme", specs, h.clock.now(), max_queued=10 * DEEP)
        leaves.extend(result.job_ids)
    return head, leaves

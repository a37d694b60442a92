"""Turning validated submit requests into new jobs: ids, dependencies, cycles
(SPEC §4, §7). Pure apart from the lookups passed in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from jobq.core.errors import FieldError, ValidationFailed
from jobq.core.models import Job, NewJob, Status, encode_json
from jobq.core.timefmt import to_ms
from jobq.rules.jobs import find_cycle, payload_hash


def build_jobs(
    tenant_id: str,
    specs: list[NewJob],
    now: datetime,
    lookup: Callable[[str], Job | None],
    new_id: Callable[[], str],
    idempotency_key: str | None,
) -> list[Job]:
    """The jobs a (batch) submit creates; raises `ValidationFailed` for an
    unknown or foreign dependency, one that already failed, or a cycle."""
    single = len(specs) == 1 and specs[0].ref is None
    ids = [new_id() for _ in specs]
    if any(spec.depends_on or spec.ref is not None for spec in specs):
        resolved = _resolve(tenant_id, specs, ids, lookup)
    else:  # the common submit: nothing to resolve, no cycle possible
        resolved = [[] for _ in specs]
    new_ids = set(ids)
    jobs = []
    for spec, job_id, deps in zip(specs, ids, resolved, strict=True):
        unfinished = bool(deps) and any(d in new_ids or _unfinished(lookup(d)) for d in deps)
        if spec.run_at:
            run_at = to_ms(spec.run_at)
        else:
            run_at = now + timedelta(seconds=spec.delay_seconds) if spec.delay_seconds else now
        jobs.append(
            Job(
                job_id=job_id,
                tenant_id=tenant_id,
                type=spec.type,
                payload_json=encode_json(spec.payload),
                payload_hash=payload_hash(spec.type, spec.payload),
                status=Status.WAITING if unfinished else Status.QUEUED,
                priority=spec.priority,
                max_attempts=spec.max_attempts,
                timeout_seconds=spec.timeout_seconds,
                next_run_at=run_at,
                created_at=now,
                updated_at=now,
                idempotency_key=idempotency_key if single else None,
                webhook_url=spec.webhook_url,
                depends_on=deps,
                expires_at=spec.expires_at,
            )
        )
    return jobs


def _resolve(
    tenant_id: str, specs: list[NewJob], ids: list[str], lookup: Callable[[str], Job | None]
) -> list[list[str]]:
    """Each spec's dependencies as job ids (refs within the batch resolved);
    raises `ValidationFailed` as `build_jobs` says."""
    by_ref = {spec.ref: job_id for spec, job_id in zip(specs, ids, strict=True) if spec.ref is not None}
    single = len(specs) == 1 and specs[0].ref is None
    errors: list[FieldError] = []
    resolved: list[list[str]] = []
    for position, spec in enumerate(specs):
        field = "dependsOn" if single else f"jobs[{position}].dependsOn"
        deps: list[str] = []
        for dep in spec.depends_on:
            if dep in by_ref:
                deps.append(by_ref[dep])
                continue
            job = lookup(dep)
            if job is None or job.tenant_id != tenant_id:
                errors.append(FieldError(field, f"unknown dependency {dep}"))
            elif job.status in (Status.FATAL, Status.CANCELLED):
                errors.append(FieldError(field, f"dependency {dep} has already ended {job.status.value}"))
            else:
                deps.append(dep)
        resolved.append(deps)
    if errors:
        raise ValidationFailed("dependsOn names jobs that cannot be waited on", errors=errors)
    cycle = find_cycle({spec.ref: [d for d in spec.depends_on if d in by_ref] for spec in specs if spec.ref})
    if cycle:
        raise ValidationFailed(
            "dependsOn forms a cycle: " + " -> ".join(cycle),
            errors=[FieldError("jobs", "cycle: " + " -> ".join(cycle))],
        )
    return resolved


def _unfinished(job: Job | None) -> bool:
    return job is not None and job.status is not Status.SUCCEEDED

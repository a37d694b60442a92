"""schemathesis against the live app (issue 9): for every operation of
`/openapi.json`, requests generated from the document, sent over loopback
with a tenant's key, must get no 500 and answers that conform to the
document (declared status codes, content types, headers and schemas).

Bounded and deterministic: `EXAMPLES` per operation, derandomized, no example
database, so a run takes a few seconds and finds the same things every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from jobq.web import openapi
from tests.conftest import Harness

EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _run(base_url: str, key: str) -> list[str]:
    """Every operation in both generation modes; the failures, as text."""
    schema = schemathesis.openapi.from_dict(openapi.document())
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"the document has an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            @given(case=strategy)
            def probe(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers={"X-API-Key": key}, checks=CHECKS, timeout=10)

            try:
                probe()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Unsatisfiable:
                # Negative mode on an operation with nothing to get wrong (no parameters, no body).
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{operation.label}: no request could be generated")
            except BaseException as exc:  # one operation's failure must not hide the others'
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}"[:2000])
    return failures


async def test_the_live_app_conforms_to_its_document(jobq: Harness) -> None:
    server = jobq.client.server
    assert server.host in ("127.0.0.1", "localhost", "::1")  # loopback only
    base_url = f"http://127.0.0.1:{server.port}"
    failures = await asyncio.to_thread(_run, base_url, jobq.key("acme"))
    assert failures == [], "\n\n".join(failures)

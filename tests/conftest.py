"""Shared fixtures: a real aiohttp server on loopback over a real data
directory, a fake clock, and tenants with known keys."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobq.core.clock import FakeClock  # noqa: E402
from jobq.core.config import Settings  # noqa: E402
from jobq.core.fsio import FileSystem  # noqa: E402
from jobq.core.models import Job, NewJob  # noqa: E402
from jobq.storage.jsonfile.store import JsonStore  # noqa: E402
from jobq.storage.protocol import IdemRequest, RunningLimits, Store, SubmitResult  # noqa: E402
from jobq.tenancy.tenants import TenantRegistry, TenantsDoc  # noqa: E402
from jobq.web.factory import WORKER, create_app  # noqa: E402
from jobq.worker.builtin import register_builtins  # noqa: E402
from jobq.worker.handlers import Registry  # noqa: E402
from jobq.worker.pool import Worker  # noqa: E402
from store import create_store  # noqa: E402
from tests.support.receivers import Answer, Receiver, ServerFactory, start_receiver  # noqa: E402


@dataclass
class Keys:
    acme: str
    acme_read: str
    globex: str
    admin: str


def write_tenants(path: Path) -> Keys:
    doc = TenantsDoc()
    acme = doc.add_tenant("acme")
    acme_read = doc.add_key("acme", read_only=True)
    globex = doc.add_tenant("globex")
    admin = doc.add_admin()
    doc.tenants["globex"]["limits"] = {"maxRunning": 2, "submitPerMinute": 60, "submitBurst": 5, "maxQueued": 50}
    doc.write(path)
    return Keys(acme, acme_read, globex, admin)


# maxRunning as the default tenant limits give it, for tests that call the store directly.
RUNNING = RunningLimits({}, 4)


def ANSWER(jobs: list[Job], reasons: list[str | None]) -> bytes:  # noqa: N802 (a constant, like RUNNING)
    """The answer codec of tests that submit to the store directly: the jobs as the API shows them."""
    return orjson.dumps([job.to_api(reason) for job, reason in zip(jobs, reasons, strict=True)])


async def store_submit(
    store: Store,
    tenant_id: str,
    specs: list[NewJob],
    now: datetime,
    *,
    max_queued: int = 1_000_000,
    idem: IdemRequest | None = None,
    limits: RunningLimits = RUNNING,
) -> SubmitResult:
    """Submit straight to the store, as the API would with these limits."""
    return await store.submit(tenant_id, specs, idem, now, max_queued=max_queued, limits=limits, encode=ANSWER)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for tests that talk to a `python app.py` process."""
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def receive(aiohttp_server: ServerFactory) -> Callable[..., Awaitable[Receiver]]:
    """`await receive(answer(500), answer(200))`: a scripted receiver on loopback."""

    async def start(*answers: Answer) -> Receiver:
        return await start_receiver(aiohttp_server, *answers)

    return start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def keys(data_dir: Path) -> Keys:
    return write_tenants(data_dir / "tenants.json")


@pytest.fixture
def settings(data_dir: Path, keys: Keys) -> Settings:
    return Settings(data_dir=data_dir, tenants_file=data_dir / "tenants.json", journal_compact_bytes=1 << 20)


@pytest.fixture
def registry() -> Registry:
    return register_builtins(Registry())


@dataclass
class Harness:
    """One running jobq over `settings.data_dir`, driven by the fake clock."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: Store
    clock: FakeClock
    keys: Keys
    settings: Settings
    registry: Registry
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def worker(self) -> Worker:
        return self.app[WORKER]

    def key(self, who: str) -> str:
        return str(getattr(self.keys, who))

    def headers(self, who: str = "acme", **extra: str) -> dict[str, str]:
        return {"X-API-Key": self.key(who), **extra}

    async def submit(
        self, who: str = "acme", expect: int = 201, headers: dict[str, str] | None = None, **body: Any
    ) -> Any:
        body.setdefault("type", "echo")
        body.setdefault("payload", {})
        response = await self.client.post("/jobs", json=body, headers={**self.headers(who), **(headers or {})})
        data = await response.json()
        assert response.status == expect, data
        return data

    async def get(self, job_id: str, who: str = "acme") -> Any:
        response = await self.client.get(f"/jobs/{job_id}", headers=self.headers(who))
        assert response.status == 200, await response.text()
        return await response.json()

    async def drain(self) -> None:
        await self.worker.run_until_idle()


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(
    aiohttp_client: Any, clock: FakeClock, keys: Keys, settings: Settings, registry: Registry
) -> HarnessFactory:
    """Start jobq (again) on the same data directory; `fs` injects faults."""

    async def start(fs: FileSystem | None = None, **overrides: Any) -> Harness:
        effective = replace(settings, **overrides)
        tenants = TenantRegistry(effective.tenants_file, clock.monotonic)
        store = create_store(effective, tenants)
        if fs is not None:
            assert isinstance(store, JsonStore), "fault injection is the JSON store's"
            store.log.fs = fs
        await store.open(clock.now())
        app = create_app(effective, store, clock, registry=registry, tenants=tenants, run_worker=False)
        client = await aiohttp_client(app)
        return Harness(client, app, store, clock, keys, effective, registry)

    return start


@pytest.fixture
async def jobq(make_harness: HarnessFactory) -> Harness:
    return await make_harness()

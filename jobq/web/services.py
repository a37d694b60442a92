"""The objects views share, under one typed `web.AppKey` (CONVENTIONS rule 14)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from jobq.core.clock import Clock
from jobq.core.config import Settings
from jobq.core.health import Health
from jobq.rules.ratelimit import SubmitLimiter
from jobq.storage.protocol import Store
from jobq.tenancy.tenants import TenantRegistry
from jobq.web.validation import SubmitDefaults
from jobq.worker.handlers import Registry


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock
    registry: Registry
    tenants: TenantRegistry
    health: Health
    redeliveries: SubmitLimiter = field(default_factory=SubmitLimiter)
    body_budget: SubmitLimiter = field(default_factory=SubmitLimiter)  # request-body KiB per tenant
    parse_lanes: dict[str, asyncio.Lock] = field(default_factory=dict)  # one large body parsed at a time per tenant
    shutting_down: bool = False

    @property
    def submit_defaults(self) -> SubmitDefaults:
        return SubmitDefaults(
            max_attempts=self.settings.max_attempts,
            timeout_seconds=self.settings.default_timeout_seconds,
            max_payload_bytes=self.settings.max_payload_bytes,
            allow_private_urls=self.settings.allow_private_urls,
        )


SERVICES = web.AppKey("jobq.services", Services)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]

"""The objects views share, under one typed `web.AppKey` (CONVENTIONS rule 14)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from clock import Clock
from config import Settings
from handlers import Registry
from health import Health
from ratelimit import SubmitLimiter
from store_protocol import Store
from tenants import TenantRegistry
from validation import SubmitDefaults


@dataclass
class Services:
    settings: Settings
    store: Store
    clock: Clock
    registry: Registry
    tenants: TenantRegistry
    health: Health
    limiter: SubmitLimiter = field(default_factory=SubmitLimiter)
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

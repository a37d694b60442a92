"""Scripted HTTP receivers on loopback for the webhook and `http` job tests,
and a resolver that answers every name with one address (a hostile DNS)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
ServerFactory = Callable[..., Awaitable[TestServer]]


class Receiver:
    """A scripted receiver: answers the queued responses in order (the last one
    again when they run out) and counts the requests it got."""

    def __init__(self, *answers: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, await request.read(), dict(request.headers)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return await answer(request)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        assert self.server is not None and self.server.port is not None
        return f"http://{host}:{self.server.port}{path}"


def answer(status: int, text: str = "", **headers: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers={k.replace("_", "-"): v for k, v in headers.items()})

    return respond


class FakeResolver(AbstractResolver):
    """Answers every name with one address, as a hostile DNS server would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [{"hostname": host, "host": self.address, "port": port, "family": family, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def start_receiver(aiohttp_server: ServerFactory, *answers: Answer) -> Receiver:
    receiver = Receiver(*answers)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    receiver.server = await aiohttp_server(app, host="127.0.0.1")
    return receiver

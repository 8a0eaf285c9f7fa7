"""One demo model server: OIP REST + OpenAI + admin on uvicorn, OIP gRPC on grpc.aio, one event loop.

Both stacks are the ones real model servers use (vLLM, KServe and MLServer
serve REST through uvicorn; gRPC through grpc.aio), so what Weir's Envoy meets
in tests is their real connection behaviour, including uvicorn closing idle
keep-alive connections after `timeout_keep_alive` (5 s unless changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import uvicorn
from starlette.applications import Starlette

from devtools.model_servers import admin, oip_rest, openai_api
from devtools.model_servers.behaviour import Behaviour
from devtools.model_servers.knobs import Knobs
from devtools.model_servers.model import TinyMLP
from devtools.model_servers.oip_grpc import OipGrpcService


@dataclasses.dataclass(frozen=True, slots=True)
class ServerPorts:
    rest: int
    grpc: int | None  # None when the server was started without gRPC


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds the server owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ModelServer:
    """A demo model server in this process's event loop.

    `ModelServer(knobs, latency_ms=20)` takes a Knobs record and/or knob
    overrides; `await start()` binds (port 0 = a free port) and returns the
    ports; `set_knobs()` changes knobs at run time; `await stop()` closes both
    servers. Also an async context manager. `grpc_port=None` serves no gRPC.
    """

    def __init__(self, knobs: Knobs | None = None, *, host: str = "127.0.0.1", rest_port: int = 0,
                 grpc_port: int | None = 0, **overrides: Any) -> None:
        self.behaviour = Behaviour((knobs or Knobs()).changed(overrides))
        self.host = host
        self._rest_port, self._grpc_port = rest_port, grpc_port
        self.model = TinyMLP()
        self.app = Starlette(routes=[
            *oip_rest.routes(self.behaviour, self.model),
            *openai_api.routes(self.behaviour),
            *admin.routes(self.behaviour, self.set_knobs),
        ])
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._uvicorn_task: asyncio.Task | None = None
        self._grpc: grpc.aio.Server | None = None
        self.ports: ServerPorts | None = None

    @property
    def knobs(self) -> Knobs:
        return self.behaviour.knobs

    @property
    def rest_url(self) -> str:
        assert self.ports, "not started"
        return f"http://{self.host}:{self.ports.rest}"

    @property
    def grpc_target(self) -> str:
        assert self.ports and self.ports.grpc, "not started with gRPC"
        return f"{self.host}:{self.ports.grpc}"

    def set_knobs(self, changes: Mapping[str, Any] | None = None, **more: Any) -> Knobs:
        """Apply knob changes at once (all or none: ValueError on an unknown knob or a bad value)."""
        knobs = self.behaviour.set_knobs({**(changes or {}), **more})
        if self._uvicorn is not None:
            # uvicorn reads this when a connection opens, so it applies to later connections.
            self._uvicorn.config.timeout_keep_alive = knobs.keep_alive_s
        return knobs

    def stats(self) -> dict[str, Any]:
        return self.behaviour.stats()

    async def start(self) -> ServerPorts:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
        # without it a keep-alive request waits ~40 ms for a delayed ACK (Nagle) behind uvicorn's split writes.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._rest_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, log_level="warning", access_log=False,
                                timeout_keep_alive=self.knobs.keep_alive_s, timeout_graceful_shutdown=2)
        self._uvicorn = _EmbeddedUvicorn(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name="model-server-rest")
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise RuntimeError("uvicorn stopped during start-up")
            await asyncio.sleep(0.005)
        rest_port = sock.getsockname()[1]

        grpc_port = None
        if self._grpc_port is not None:
            self._grpc = grpc.aio.server()
            self._grpc.add_generic_rpc_handlers([OipGrpcService(self.behaviour, self.model).handler()])
            grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self._grpc_port}")
            if grpc_port == 0:
                await self.stop()
                raise OSError(f"cannot bind gRPC to {self.host}:{self._grpc_port}")
            await self._grpc.start()
        self.ports = ServerPorts(rest=rest_port, grpc=grpc_port)
        return self.ports

    async def stop(self, grace: float = 0.5) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            await self._uvicorn_task
            self._uvicorn = self._uvicorn_task = None

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

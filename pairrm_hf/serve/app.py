"""The HTTP app of ``pairrm serve`` (FastAPI), and a helper that runs it with uvicorn in a background thread.

Bounds and errors: bodies over ``max_body_bytes`` get 413; more than ``max_pending`` requests in the server get
503 with ``Retry-After``; malformed JSON 400; wrong fields 422 (404 for unknown paths); every error body is
``{"error": message, "field": name}`` with the offending field (``body`` for the request as a whole). A client that
disconnects cancels its request: its queued work is dropped before it reaches the engine and its batch-mates are
unaffected. With an API key every endpoint except ``/health`` needs ``Authorization: Bearer <key>`` (or
``X-Api-Key: <key>``, as OpenRLHF's reward server accepts).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .batcher import Cancelled, RequestScope
from .protocol import RequestError
from .rendezvous import GroupRendezvous
from .service import PairRMService

__all__ = ["create_app", "BackgroundServer", "DEFAULT_MAX_BODY_BYTES", "API_KEY_ENV"]

#: Default bound on a request body (bytes).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "PAIRRM_API_KEY"

#: ``execute(endpoint, payload, scope) -> response dict``, awaited by the routes.
Executor = Callable[[str, Any, RequestScope], Awaitable[dict]]


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


async def _read_json(request: Request, max_body_bytes: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise RequestError("body", f"body is {length} bytes; this server takes at most {max_body_bytes}", 413)
    body = bytearray()
    async for chunk in request.stream():  # counted while reading: Content-Length may be absent or wrong
        body += chunk
        if len(body) > max_body_bytes:
            raise RequestError("body", f"body is over {max_body_bytes} bytes, the most this server takes", 413)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError("body", f"body is not valid JSON: {err}", 400) from None


def _prometheus(metrics: dict) -> str:
    lines = []
    for endpoint, by_status in metrics["requests"].items():
        for status, count in by_status.items():
            lines.append(f'pairrm_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
    for endpoint, lat in metrics["latency"].items():
        for q in ("p50", "p99"):
            lines.append(f'pairrm_latency_ms{{endpoint="{endpoint}",quantile="{q}"}} {lat[q + "_ms"]}')
    for key, value in metrics["batcher"].items():
        if isinstance(value, (int, float)):
            lines.append(f"pairrm_batcher_{key} {float(value)}")
    for key, value in metrics.get("rendezvous", {}).items():
        if key == "group_sizes":
            lines += [f'pairrm_rendezvous_groups{{size="{size}"}} {count}' for size, count in value.items()]
        elif isinstance(value, (int, float)):
            lines.append(f"pairrm_rendezvous_{key} {float(value)}")
    return "\n".join(lines) + "\n"


def create_app(
    service: PairRMService,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pending: int = 256,
    execute: Executor | None = None,
    rendezvous: GroupRendezvous | None = None,
) -> FastAPI:
    """The FastAPI app serving ``service``: ``/rank``, ``/compare``, ``/score``, ``/get_reward``, ``/health``,
    ``/metrics`` (JSON; ``?format=prometheus`` for Prometheus text).

    Args:
        service: the model and its batcher.
        api_key: when set, required as a bearer token (or ``X-Api-Key``) on every endpoint but ``/health``.
        max_body_bytes: larger bodies get 413.
        max_pending: requests admitted at once (computing or waiting); more get 503.
        execute: how a parsed request is run; default: :meth:`PairRMService.handle` in a worker thread. The Ray
            Serve deployment passes its ``@serve.batch`` method here.
        rendezvous: group per-sample ``/get_reward`` requests by prompt (``pairrm serve --group-size``, see
            :mod:`pairrm_hf.serve.rendezvous`); its counters appear in ``/metrics`` under ``rendezvous``.
    """

    async def in_thread(endpoint: str, payload: Any, scope: RequestScope) -> dict:
        # abandon_on_cancel: a disconnected client's thread ends on its own (Cancelled at its next engine call)
        return await anyio.to_thread.run_sync(service.handle, endpoint, payload, scope, abandon_on_cancel=True)

    run = execute or in_thread
    app = FastAPI(title="pairrm-hf", summary="PairRM ranking and rewards over HTTP", docs_url=None, redoc_url=None)
    state = {"pending": 0}

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        return bool(token) and hmac.compare_digest(token.encode(), api_key.encode())

    def unauthorized() -> JSONResponse:
        return _error(
            401,
            "Authorization",
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )

    async def handle(endpoint: str, request: Request) -> JSONResponse:
        start = time.perf_counter()
        status = 200
        if not authorized(request):
            service.record(endpoint, 401, 0.0)
            return unauthorized()
        if state["pending"] >= max_pending:
            service.record(endpoint, 503, 0.0)
            return _error(503, None, f"server busy: {max_pending} requests pending; retry later", {"Retry-After": "1"})
        state["pending"] += 1
        scope = RequestScope()
        try:
            payload = await _read_json(request, max_body_bytes)
            result: dict | None = None

            async def watch_disconnect() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                scope.cancel()
                group.cancel_scope.cancel()

            failure: Exception | None = None
            async with anyio.create_task_group() as group:
                group.start_soon(watch_disconnect)
                try:
                    if rendezvous is not None and endpoint == "get_reward":
                        result = await rendezvous.get_reward(payload, scope, run)
                    else:
                        result = await run(endpoint, payload, scope)
                except Exception as err:  # noqa: BLE001 - re-raised below, outside the task group's wrapping
                    failure = err
                group.cancel_scope.cancel()
            if failure is not None:
                raise failure
            if result is None:  # the client went away; nobody reads this response
                status = 499
                return _error(499, None, "client closed the request")
            return JSONResponse(result)
        except RequestError as err:
            status = err.status
            return _error(err.status, err.field, str(err))
        except Cancelled:
            status = 499
            return _error(499, None, "client closed the request")
        except Exception as err:  # noqa: BLE001 - a failure of this request only; the server keeps serving
            status = 500
            return _error(500, None, f"internal error: {type(err).__name__}: {err}")
        finally:
            state["pending"] -= 1
            service.record(endpoint, status, time.perf_counter() - start)

    def route(endpoint: str):
        async def endpoint_fn(request: Request) -> JSONResponse:
            return await handle(endpoint, request)

        endpoint_fn.__name__ = endpoint
        app.post(f"/{endpoint}")(endpoint_fn)

    for name in ("rank", "compare", "score", "get_reward"):
        route(name)

    @app.get("/health")
    async def health() -> dict:
        return service.health()

    @app.get("/metrics")
    async def metrics(request: Request, format: str = "json"):  # noqa: A002 - the query parameter's name
        if not authorized(request):
            return unauthorized()
        data = service.metrics()
        data["pending"] = state["pending"]
        if rendezvous is not None:
            data["rendezvous"] = rendezvous.snapshot()
        if format == "prometheus":
            return PlainTextResponse(_prometheus(data))
        return data

    @app.exception_handler(404)
    async def not_found(request: Request, exc) -> JSONResponse:
        return _error(
            404,
            "path",
            f"no endpoint {request.url.path}; expected /rank, /compare, /score, /get_reward, /health or /metrics",
        )

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc) -> JSONResponse:
        return _error(405, "method", f"{request.method} is not allowed on {request.url.path}")

    return app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread (tests, examples, benchmarks); ``port=0`` picks a free one.

    >>> with BackgroundServer(create_app(service)) as server:   # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off"))
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="pairrm-serve", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start serving; returns once the socket is bound."""
        self._thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

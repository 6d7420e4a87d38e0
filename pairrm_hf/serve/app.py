"""The HTTP app of ``pairrm serve`` (FastAPI), and a helper that runs it with uvicorn in a background thread.

Bounds and errors: bodies over ``max_body_bytes`` get 413, and so do requests over the per-request cost limit
(:class:`~pairrm_hf.serve.protocol.Limits`); a body not received within ``body_timeout`` seconds gets 408; more
than ``max_pending`` requests in the server get 503 with ``Retry-After``; malformed JSON 400; wrong fields 422
(404 for unknown paths, 405 with ``Allow`` for a wrong method); every error body is ``{"error": message, "field":
name}`` with the offending field (``body`` for the request as a whole). A client that disconnects cancels its
request: its work stops before the engine's next forward batch (see :mod:`pairrm_hf.serve.batcher`) and its
batch-mates are unaffected; it is counted as 499. With an API key every endpoint except ``/health`` needs
``Authorization: Bearer <key>`` (or ``X-Api-Key: <key>``, as OpenRLHF's reward server accepts); ``/health`` then
answers details (model, device, pid, …) only to a caller with the key. ``/docs`` and ``/openapi.json`` describe
the request bodies.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.requests import ClientDisconnect

from .batcher import Cancelled, RequestScope
from .protocol import RequestError, parse_json, request_schemas
from .rendezvous import GroupRendezvous
from .service import PairRMService

__all__ = [
    "create_app",
    "BackgroundServer",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "API_KEY_ENV",
]

#: Default bound on a request body (bytes).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Default seconds a client has to send a whole request body once its headers are in (then 408).
DEFAULT_BODY_TIMEOUT = 30.0
#: Default seconds an idle keep-alive connection stays open between requests (uvicorn's ``timeout_keep_alive``).
DEFAULT_IDLE_TIMEOUT = 5.0
#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "PAIRRM_API_KEY"

#: ``execute(endpoint, payload, scope) -> response dict``, awaited by the routes.
Executor = Callable[[str, Any, RequestScope], Awaitable[dict]]


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


async def _read_json(request: Request, max_body_bytes: int, body_timeout: float) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise RequestError("body", f"body is {length} bytes; this server takes at most {max_body_bytes}", 413)
    body = bytearray()
    try:
        # one deadline for the whole body: a client trickling bytes holds its slot for body_timeout at most
        with anyio.fail_after(body_timeout):
            async for chunk in request.stream():  # counted while reading: Content-Length may be absent or wrong
                body += chunk
                if len(body) > max_body_bytes:
                    raise RequestError("body", f"body is over {max_body_bytes} bytes, the most this server takes", 413)
    except TimeoutError:
        raise RequestError("body", f"body not received within {body_timeout:g} s", 408) from None
    return parse_json(bytes(body))


#: ``/metrics?format=`` values.
METRICS_FORMATS = ("json", "prometheus")


def _prometheus(metrics: dict) -> str:
    """The Prometheus text exposition format (0.0.4) of :meth:`PairRMService.metrics`."""
    lines = [
        "# HELP pairrm_requests_total Requests answered, by endpoint and HTTP status.",
        "# TYPE pairrm_requests_total counter",
    ]
    for endpoint, by_status in metrics["requests"].items():
        for status, count in by_status.items():
            lines.append(f'pairrm_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
    lines += [
        "# HELP pairrm_request_duration_seconds Time to answer successful requests (quantiles of the recent ones).",
        "# TYPE pairrm_request_duration_seconds summary",
    ]
    for endpoint, lat in metrics["latency"].items():
        for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            lines.append(f'pairrm_request_duration_seconds{{endpoint="{endpoint}",quantile="{q}"}} {lat[key] / 1000}')
        lines.append(f'pairrm_request_duration_seconds_sum{{endpoint="{endpoint}"}} {lat["sum_s"]}')
        lines.append(f'pairrm_request_duration_seconds_count{{endpoint="{endpoint}"}} {lat["total"]}')
    lines += [
        "# HELP pairrm_pending_requests Requests in the server now (reading, waiting or computing).",
        "# TYPE pairrm_pending_requests gauge",
        f"pairrm_pending_requests {metrics['pending']}",
    ]
    for key, value in metrics["batcher"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines += [
                f"# HELP pairrm_batcher_{key} The batcher's {key.replace('_', ' ')} (see /metrics JSON).",
                f"# TYPE pairrm_batcher_{key} gauge",
                f"pairrm_batcher_{key} {float(value)}",
            ]
    for key, value in metrics.get("rendezvous", {}).items():
        if key == "group_sizes":
            lines += [
                "# HELP pairrm_rendezvous_groups Groups scored, by the number of samples they held.",
                "# TYPE pairrm_rendezvous_groups counter",
            ]
            lines += [f'pairrm_rendezvous_groups{{size="{size}"}} {count}' for size, count in value.items()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lines += [
                f"# HELP pairrm_rendezvous_{key} The group rendezvous' {key.replace('_', ' ')} (see /metrics JSON).",
                f"# TYPE pairrm_rendezvous_{key} gauge",
                f"pairrm_rendezvous_{key} {float(value)}",
            ]
    return "\n".join(lines) + "\n"


def create_app(
    service: PairRMService,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pending: int = 256,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    execute: Executor | None = None,
    rendezvous: GroupRendezvous | None = None,
) -> FastAPI:
    """The FastAPI app serving ``service``: ``/rank``, ``/compare``, ``/score``, ``/get_reward``, ``/health``,
    ``/metrics`` (JSON; ``?format=prometheus`` for Prometheus text).

    Args:
        service: the model and its batcher.
        api_key: when set, required as a bearer token (or ``X-Api-Key``) on every endpoint but ``/health``.
        max_body_bytes: larger bodies get 413.
        max_pending: requests admitted at once (reading their body, waiting or computing); more get 503.
        body_timeout: seconds a client has to send its whole body; later gets 408 and frees its slot.
        execute: how a parsed request is run; default: :meth:`PairRMService.handle` in a worker thread. The Ray
            Serve deployment passes its ``@serve.batch`` method here.
        rendezvous: group per-sample ``/get_reward`` requests by prompt (``pairrm serve --group-size``, see
            :mod:`pairrm_hf.serve.rendezvous`); its counters appear in ``/metrics`` under ``rendezvous``.
    """

    async def in_thread(endpoint: str, payload: Any, scope: RequestScope) -> dict:
        # abandon_on_cancel: a disconnected client's thread ends on its own (Cancelled at its next engine call)
        return await anyio.to_thread.run_sync(service.handle, endpoint, payload, scope, abandon_on_cancel=True)

    run = execute or in_thread
    app = FastAPI(title="pairrm-hf", summary="PairRM ranking and rewards over HTTP", redoc_url=None)
    state = {"pending": 0}
    key_bytes = api_key.encode("utf-8") if api_key else b""

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        # headers arrive as bytes that Starlette decodes as Latin-1: encoding back gives the bytes the client sent,
        # which for a non-ASCII key are its UTF-8 bytes
        return bool(token) and hmac.compare_digest(token.encode("latin-1", "replace"), key_bytes)

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
            payload = await _read_json(request, max_body_bytes, body_timeout)
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
        except (Cancelled, ClientDisconnect):  # gone while computing, or while still sending its body
            status = 499
            return _error(499, None, "client closed the request")
        except Exception as err:  # noqa: BLE001 - a failure of this request only; the server keeps serving
            status = 500
            return _error(500, None, f"internal error: {type(err).__name__}: {err}")
        finally:
            state["pending"] -= 1
            service.record(endpoint, status, time.perf_counter() - start)

    schemas = request_schemas(service.limits)

    def route(endpoint: str):
        async def endpoint_fn(request: Request) -> JSONResponse:
            return await handle(endpoint, request)

        endpoint_fn.__name__ = endpoint
        body = {"required": True, "content": {"application/json": {"schema": schemas[endpoint]}}}
        app.post(f"/{endpoint}", description=schemas[endpoint]["description"], openapi_extra={"requestBody": body})(
            endpoint_fn
        )

    for name in ("rank", "compare", "score", "get_reward"):
        route(name)

    @app.get("/health")
    async def health(request: Request) -> dict:
        # a liveness probe needs no key; what runs where (model, device, pid) is for callers with the key
        return service.health() if authorized(request) else {"status": "ok"}

    @app.get("/metrics")
    async def metrics(request: Request, format: str = "json"):  # noqa: A002 - the query parameter's name
        if not authorized(request):
            return unauthorized()
        if format not in METRICS_FORMATS:
            return _error(422, "format", f"format must be one of {list(METRICS_FORMATS)}, got {format!r}")
        data = service.metrics()
        data["pending"] = state["pending"]
        if rendezvous is not None:
            data["rendezvous"] = rendezvous.snapshot()
        if format == "prometheus":
            return PlainTextResponse(_prometheus(data), media_type="text/plain; version=0.0.4")
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
        allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
        return _error(
            405, "method", f"{request.method} is not allowed on {request.url.path}; use {allow}", {"Allow": allow}
        )

    return app


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread (tests, examples, benchmarks); ``port=0`` picks a free one.

    >>> with BackgroundServer(create_app(service)) as server:   # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(
        self,
        app,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ):
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, lifespan="off", timeout_keep_alive=idle_timeout
        )
        self.server = uvicorn.Server(config)
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

"""The same app on Ray Serve: N replicas (one per GPU), Ray's own request batching (``@serve.batch``).

Each replica loads the model once and serves the FastAPI app of :mod:`pairrm_hf.serve.app` (same endpoints, errors,
auth and bounds as the embedded server); Ray's HTTP proxy spreads requests over the replicas. Inside a replica,
``@serve.batch`` collects up to ``max_batch_size`` concurrent requests for ``batch_wait_timeout_s`` and hands them
over together; they run through the replica's :class:`~pairrm_hf.serve.batcher.PairBatcher`, which merges their
pairs into one engine call (per round of an adaptive schedule), as in the embedded server.

Entry points: ``pairrm serve --ray --replicas N`` or, in Python::

    from ray import serve
    from pairrm_hf.serve.ray_app import build_deployment
    serve.run(build_deployment("llm-blender/PairRM-hf", replicas=2), route_prefix="/")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
from ray import serve

from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .batcher import RequestScope
from .protocol import Limits, RequestError
from .service import PairRMService

__all__ = ["PairRMDeployment", "PairRMReplica", "build_deployment", "replica_options", "run_ray"]


class PairRMReplica:
    """One model replica: a :class:`PairRMService` whose requests Ray batches (``@serve.batch``).

    :class:`PairRMDeployment` serves it over HTTP; the group ingress (:mod:`pairrm_hf.serve.ray_ingress`) deploys
    it without HTTP and calls :meth:`execute` through a handle.
    """

    def __init__(
        self,
        model: str,
        *,
        model_kwargs: dict | None = None,
        limits: dict | None = None,
        api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_pending: int = 256,
        max_batch_size: int = 32,
        batch_wait_timeout_s: float = 0.005,
        **service_kwargs: Any,
    ):
        import torch

        model_kwargs = dict(model_kwargs or {})
        if model_kwargs.get("device") is None:
            # Ray sets CUDA_VISIBLE_DEVICES to the replica's GPU, so "cuda" is this replica's own device
            model_kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        service_kwargs.setdefault("max_wait_ms", 1000.0 * batch_wait_timeout_s + 5.0)
        self.service = PairRMService.from_pretrained(
            model, limits=Limits(**(limits or {})), **model_kwargs, **service_kwargs
        )
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._max_pending = max_pending
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _execute(self, endpoint: str, payload: Any, scope: RequestScope) -> dict:
        status, value = await self._batched(endpoint, payload, scope)
        if status == "error":
            raise value
        return value

    async def execute(self, endpoint: str, payload: Any) -> tuple:
        """One request sent by a Ray handle (the group ingress, :mod:`pairrm_hf.serve.ray_ingress`), batched like
        HTTP requests: ``("ok", response)`` or ``("error", status, field, message)`` for a bad request."""
        try:
            return ("ok", await self._execute(endpoint, payload, RequestScope()))
        except RequestError as err:
            return ("error", err.status, err.field, str(err))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batched(self, endpoints: list[str], payloads: list[Any], scopes: list[RequestScope]) -> list[tuple]:
        # Ray hands over the requests it collected; they start together, so the PairBatcher sees them all active
        # and merges their pairs into one engine call. Errors are returned per request, never for the whole batch.
        async def one(endpoint: str, payload: Any, scope: RequestScope) -> tuple:
            try:
                result = await anyio.to_thread.run_sync(
                    self.service.handle, endpoint, payload, scope, abandon_on_cancel=True
                )
                return ("ok", result)
            except Exception as err:  # noqa: BLE001 - delivered to its own request by _execute
                return ("error", err)

        return list(await asyncio.gather(*(one(e, p, s) for e, p, s in zip(endpoints, payloads, scopes))))

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.close()


@serve.deployment
@serve.ingress()
class PairRMDeployment(PairRMReplica):
    """One Ray Serve replica: a :class:`PairRMService` behind the FastAPI app, requests batched by Ray."""

    def __serve_build_asgi_app__(self):
        return create_app(
            self.service,
            api_key=self._api_key,
            max_body_bytes=self._max_body_bytes,
            max_pending=self._max_pending,
            execute=self._execute,
        )


def replica_options(replicas: int, gpus_per_replica: float | None = None) -> dict:
    """Ray Serve options for ``replicas`` model replicas; ``gpus_per_replica`` defaults to 1 when Ray's cluster has
    GPUs (one replica per GPU), else 0 (CPU replicas)."""
    import ray

    if gpus_per_replica is None:
        gpus_per_replica = 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"num_replicas": replicas, "ray_actor_options": {"num_gpus": gpus_per_replica, "num_cpus": 1}}


def build_deployment(model: str, *, replicas: int = 1, gpus_per_replica: float | None = None, **kwargs: Any):
    """A bound Ray Serve application of ``replicas`` PairRM replicas, ready for ``serve.run``.

    ``gpus_per_replica`` defaults to 1 when Ray's cluster has GPUs (one replica per GPU), else 0 (CPU replicas).
    Other keyword arguments go to :class:`PairRMDeployment` (``model_kwargs``, ``limits``, ``api_key``,
    ``max_batch_size``, ``batch_wait_timeout_s``, ``max_body_bytes``, ``max_pending``, ``max_wait_ms``, ...).
    """
    return PairRMDeployment.options(**replica_options(replicas, gpus_per_replica)).bind(model, **kwargs)


def run_ray(
    model: str,
    *,
    replicas: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_kwargs: dict | None = None,
    limits: dict | None = None,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pending: int = 256,
    max_wait_ms: float = 5.0,
    max_batch_pairs: int = 8192,
    batching: bool = True,
    build: Callable[..., Any] = build_deployment,
    **build_kwargs: Any,
) -> None:
    """``pairrm serve --ray``: start (or join) Ray, deploy, serve on ``host:port`` until interrupted.

    ``build`` makes the application (default :func:`build_deployment`; ``pairrm serve --group-size`` passes
    :func:`pairrm_hf.serve.ray_ingress.build_group_deployment`), with ``build_kwargs`` added to its arguments.
    """
    import ray

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    app = build(
        model,
        replicas=replicas,
        model_kwargs=model_kwargs,
        limits=limits,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        max_pending=max_pending,
        batch_wait_timeout_s=max_wait_ms / 1000.0,
        max_batch_pairs=max_batch_pairs,
        batching=batching,
        **build_kwargs,
    )
    serve.run(app, route_prefix="/")
    print(f"pairrm serve: Ray Serve on http://{host}:{port} with {replicas} replica(s)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()

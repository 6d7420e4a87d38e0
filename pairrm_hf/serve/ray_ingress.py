"""Group rendezvous on Ray Serve: one light ingress replica meets the samples, model replicas score whole groups.

``pairrm serve --ray --replicas N --group-size G`` deploys two things:

* :class:`PairRMIngress` (one replica, no model): the FastAPI app of :mod:`pairrm_hf.serve.app` with a
  :class:`~pairrm_hf.serve.rendezvous.GroupRendezvous`. Per-sample ``/get_reward`` requests meet here by prompt;
  each whole group, and every other request, goes to the model deployment through a Ray handle.
* :data:`PairRMScorer` (``N`` replicas, one per GPU): :class:`~pairrm_hf.serve.ray_app.PairRMReplica` without HTTP;
  scores what the ingress sends (:meth:`~pairrm_hf.serve.ray_app.PairRMReplica.execute`), batching concurrent
  groups as the HTTP replicas do.

So every sample of a prompt is scored together, on one replica, however many replicas there are. The rendezvous
needs all samples of a prompt to reach the same process: keep the ingress at one replica (it only parses JSON and
waits) and give clients the ingress URL alone.

In Python::

    from ray import serve
    from pairrm_hf.serve.ray_ingress import build_group_deployment
    serve.run(build_group_deployment("llm-blender/PairRM-hf", replicas=2, group_size=8), route_prefix="/")
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from ..utils.version import __version__
from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .batcher import RequestScope
from .protocol import Limits, RequestError
from .ray_app import PairRMReplica, replica_options
from .rendezvous import GroupRendezvous
from .request_metrics import RequestMetrics, public_model_name

__all__ = ["IngressService", "PairRMIngress", "PairRMScorer", "build_group_deployment"]

#: The model replicas behind the ingress: :class:`~pairrm_hf.serve.ray_app.PairRMReplica`, reached by handle only.
PairRMScorer = serve.deployment(PairRMReplica, name="PairRMScorer")


class IngressService:
    """What the app needs of a service (``record``, ``health``, ``metrics``) for a front that holds no model."""

    def __init__(self, model_name: str, replicas: int, limits: Limits | None = None):
        self.model_name = public_model_name(model_name)
        self.replicas = replicas
        #: the bounds the ingress checks (and ``/openapi.json`` declares); the replicas apply the same ones
        self.limits = limits or Limits()
        self.requests = RequestMetrics()

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request for ``/metrics``."""
        self.requests.record(endpoint, status, seconds)

    def health(self) -> dict:
        """What ``/health`` returns at the ingress."""
        return {
            "status": "ok",
            "role": "ingress",
            "model": self.model_name,
            "replicas": self.replicas,
            "version": __version__,
            "pid": os.getpid(),
        }

    def metrics(self) -> dict:
        """Requests by endpoint and status and latency percentiles, seen at the ingress (waits included)."""
        return {**self.requests.snapshot(), "batcher": {}}


@serve.deployment
@serve.ingress()
class PairRMIngress:
    """The ingress replica: HTTP, auth, bounds and the group rendezvous; the model replicas do the scoring."""

    def __init__(
        self,
        model_app,
        *,
        model_name: str,
        replicas: int,
        group_size: int,
        group_timeout_s: float = 30.0,
        lone: str = "zero",
        limits: dict | None = None,
        api_key: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_pending: int = 4096,
    ):
        self.model = model_app  # a DeploymentHandle once Ray has bound the application
        limits = Limits(**(limits or {}))
        self.rendezvous = GroupRendezvous(group_size, group_timeout_s, lone=lone, limits=limits)
        self.front = IngressService(model_name, replicas, limits)
        self._api_key = api_key
        self._max_body_bytes = max_body_bytes
        self._max_pending = max_pending

    def __serve_build_asgi_app__(self):
        return create_app(
            self.front,
            api_key=self._api_key,
            max_body_bytes=self._max_body_bytes,
            max_pending=self._max_pending,
            execute=self._forward,
            rendezvous=self.rendezvous,
        )

    async def _forward(self, endpoint: str, payload: Any, scope: RequestScope) -> dict:
        answer = await self.model.execute.remote(endpoint, payload)
        if answer[0] == "error":
            _, status, field, message = answer
            raise RequestError(field, message, status)
        return answer[1]


def build_group_deployment(
    model: str,
    *,
    replicas: int = 1,
    group_size: int,
    group_timeout_s: float = 30.0,
    lone: str = "zero",
    limits: dict | None = None,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pending: int = 4096,
    gpus_per_replica: float | None = None,
    **model_kwargs: Any,
):
    """A bound Ray Serve application: one :class:`PairRMIngress` in front of ``replicas`` model replicas.

    ``model_kwargs`` go to :class:`~pairrm_hf.serve.ray_app.PairRMReplica` (``model_kwargs``, ``max_wait_ms``,
    ``max_batch_size``, ...). Bad requests are answered by the ingress before any group forms.
    """
    # Ray admits 5 requests per replica by default: the scorers take a whole @serve.batch, and the ingress every
    # waiting sample (a group of G needs G requests inside the ingress at once; the rest wait in Ray's proxy)
    scorer = PairRMScorer.options(
        **replica_options(replicas, gpus_per_replica), max_ongoing_requests=model_kwargs.get("max_batch_size", 32)
    )
    model_app = scorer.bind(model, limits=limits, **model_kwargs)
    ingress = PairRMIngress.options(num_replicas=1, max_ongoing_requests=max_pending, ray_actor_options={"num_cpus": 0})
    return ingress.bind(
        model_app,
        model_name=model,
        replicas=replicas,
        group_size=group_size,
        group_timeout_s=group_timeout_s,
        lone=lone,
        limits=limits,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        max_pending=max_pending,
    )

"""The served PairRM: one model, one :class:`~pairrm_hf.serve.batcher.PairBatcher`, request metrics.

Transport-free on purpose: the FastAPI app (:mod:`pairrm_hf.serve.app`) and the Ray Serve deployment
(:mod:`pairrm_hf.serve.ray_app`) both call :meth:`PairRMService.handle` from a worker thread.
"""

from __future__ import annotations

import os
from typing import Any

from ..ranking.ranker import PairRM
from ..utils.version import __version__
from .batcher import BatchedEngine, PairBatcher, RequestScope
from .protocol import ENDPOINTS, Limits, RequestError
from .request_metrics import RequestMetrics, public_model_name

__all__ = ["PairRMService"]


class PairRMService:
    """Runs protocol requests on one :class:`PairRM` with dynamic batching across concurrent requests.

    Args:
        rm: the loaded model (its engine's ``batch_size``/``max_batch_tokens`` cut the forward passes).
        max_wait_ms: see :class:`~pairrm_hf.serve.batcher.PairBatcher`.
        max_batch_pairs: see :class:`~pairrm_hf.serve.batcher.PairBatcher`.
        batching: see :class:`~pairrm_hf.serve.batcher.PairBatcher`.
        limits: per-request bounds (:class:`~pairrm_hf.serve.protocol.Limits`).
        model_name: what ``/health`` reports (a local folder by its last part, never its full path).
    """

    def __init__(
        self,
        rm: PairRM,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int = 8192,
        batching: bool = True,
        limits: Limits | None = None,
        model_name: str | None = None,
    ):
        self.rm = rm
        self.batcher = PairBatcher(
            rm.engine, max_wait_ms=max_wait_ms, max_batch_pairs=max_batch_pairs, batching=batching
        )
        self.limits = limits or Limits()
        self.model_name = public_model_name(model_name or str(getattr(rm.engine.model, "name_or_path", "") or "pairrm"))
        self.requests = RequestMetrics()

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        backbone_config: str | None = None,
        backend: str | None = None,
        attention: str | None = None,
        quantize: str | None = None,
        calibration: str | os.PathLike | None = None,
        calibration_size: int | None = None,
        packing: bool = False,
        **kwargs: Any,
    ) -> PairRMService:
        """Load ``model`` (any layout :meth:`PairRM.from_pretrained` loads) and serve it; ``backend`` as there
        (default ``"auto"``: OpenVINO on CPU when installed, else torch; ``/health`` says which runs); ``attention``
        picks the self-attention path (``"fused"``/``"eager"``/``"flex"``, see :mod:`pairrm_hf.models.attention`);
        ``quantize``, ``calibration`` and ``calibration_size`` as there (static int8 on OpenVINO with a calibration);
        ``packing`` runs each batch's pairs as one packed sequence (torch backend)."""
        rm = PairRM.from_pretrained(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            backbone_config=backbone_config,
            backend=backend,
            attention=attention,
            quantize=quantize,
            calibration=calibration,
            calibration_size=calibration_size,
            packing=packing,
        )
        return cls(rm, model_name=os.fspath(model), **kwargs)

    def view(self, scope: RequestScope) -> PairRM:
        """The served PairRM as one request sees it: same model and settings, engine calls go through the batcher."""
        return PairRM.from_engine(BatchedEngine(self.batcher, scope))

    def handle(self, endpoint: str, payload: Any, scope: RequestScope | None = None) -> dict:
        """Run one request (blocking; call it from a worker thread). Raises :class:`RequestError` for bad input."""
        if endpoint not in ENDPOINTS:
            raise RequestError("path", f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}", 404)
        scope = scope or RequestScope()
        self.batcher.enter()
        try:
            return ENDPOINTS[endpoint](self.view(scope), payload, self.limits)
        except RequestError:
            raise
        except (TypeError, ValueError) as err:  # PairRM's own input checks name the argument first
            raise RequestError(str(err).split(" ", 1)[0].rstrip(":"), str(err)) from None
        finally:
            self.batcher.leave()

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request for ``/metrics``."""
        self.requests.record(endpoint, status, seconds)

    def health(self) -> dict:
        """What ``/health`` returns."""
        return {
            "status": "ok",
            "model": self.model_name,
            "device": str(self.rm.device),
            "dtype": str(next(self.rm.engine.model.parameters()).dtype).replace("torch.", ""),
            "batch_size": self.rm.engine.batch_size,
            "backend": getattr(self.rm.engine, "backend", "torch"),
            "batching": self.batcher.batching,
            "version": __version__,
            "pid": os.getpid(),  # tells replicas apart behind a load balancer (Ray Serve)
        }

    def metrics(self) -> dict:
        """What ``/metrics`` returns: requests by endpoint and status, latency percentiles (``count`` recent ones;
        ``total``/``sum_s`` over all successful requests so far), batcher counters."""
        return {
            **self.requests.snapshot(),
            "batcher": self.batcher.snapshot(),
        }

    def close(self) -> None:
        """Stop the batcher thread."""
        self.batcher.close()

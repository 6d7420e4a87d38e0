"""The served PairRM: one model, one :class:`~pairrm_hf.serve.batcher.PairBatcher`, request metrics.

Transport-free on purpose: the FastAPI app (:mod:`pairrm_hf.serve.app`) and the Ray Serve deployment
(:mod:`pairrm_hf.serve.ray_app`) both call :meth:`PairRMService.handle` from a worker thread.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import defaultdict, deque
from typing import Any

import numpy as np

from ..ranking.ranker import PairRM
from ..utils.version import __version__
from .batcher import BatchedEngine, PairBatcher, RequestScope
from .protocol import ENDPOINTS, Limits, RequestError

__all__ = ["PairRMService"]


class PairRMService:
    """Runs protocol requests on one :class:`PairRM` with dynamic batching across concurrent requests.

    Args:
        rm: the loaded model (its engine's ``batch_size``/``max_batch_tokens`` cut the forward passes).
        max_wait_ms, max_batch_pairs, batching: see :class:`~pairrm_hf.serve.batcher.PairBatcher`.
        limits: per-request bounds (:class:`~pairrm_hf.serve.protocol.Limits`).
        model_name: what ``/health`` reports.
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
        self.model_name = model_name or str(getattr(rm.model, "name_or_path", "") or "pairrm")
        self.started = time.time()
        self._lock = threading.Lock()
        self._requests: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=2048))

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
        **kwargs: Any,
    ) -> PairRMService:
        """Load ``model`` (any layout :meth:`PairRM.from_pretrained` loads) and serve it; ``backend="openvino"`` runs
        the backbone on OpenVINO (CPU)."""
        rm = PairRM.from_pretrained(
            model, device=device, dtype=dtype, batch_size=batch_size, backbone_config=backbone_config, backend=backend
        )
        return cls(rm, model_name=os.fspath(model), **kwargs)

    def view(self, scope: RequestScope) -> PairRM:
        """The served PairRM as one request sees it: same model and settings, engine calls go through the batcher."""
        view = copy.copy(self.rm)
        view.engine = BatchedEngine(self.batcher, scope)
        return view

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
            raise RequestError(str(err).split(" ", 1)[0], str(err)) from None
        finally:
            self.batcher.leave()

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request for ``/metrics``."""
        with self._lock:
            self._requests[endpoint][status] += 1
            if status == 200:
                self._latency[endpoint].append(seconds)

    def health(self) -> dict:
        """What ``/health`` returns."""
        return {
            "status": "ok",
            "model": self.model_name,
            "device": str(self.rm.device),
            "dtype": str(next(self.rm.model.parameters()).dtype).replace("torch.", ""),
            "batch_size": self.rm.engine.batch_size,
            "backend": getattr(self.rm.engine, "backend", "torch"),
            "batching": self.batcher.batching,
            "version": __version__,
            "pid": os.getpid(),  # tells replicas apart behind a load balancer (Ray Serve)
        }

    def metrics(self) -> dict:
        """What ``/metrics`` returns: requests by endpoint and status, latency percentiles, batcher counters."""
        with self._lock:
            requests = {e: {str(s): n for s, n in by.items()} for e, by in self._requests.items()}
            latency = {}
            for endpoint, values in self._latency.items():
                ms = np.array(values, dtype=np.float64) * 1000.0
                latency[endpoint] = {
                    "count": len(ms),
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                }
        return {
            "uptime_s": time.time() - self.started,
            "requests": requests,
            "latency": latency,
            "batcher": self.batcher.snapshot(),
        }

    def close(self) -> None:
        """Stop the batcher thread."""
        self.batcher.close()

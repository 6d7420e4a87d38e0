"""Request counters behind ``/metrics`` and the model name behind ``/health``, shared by every served model kind."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque

import numpy as np

__all__ = ["RequestMetrics", "public_model_name"]


class RequestMetrics:
    """Requests by endpoint and status, and latency of the successful ones (thread-safe).

    ``snapshot()`` gives ``uptime_s``, ``requests`` (endpoint → status → count) and ``latency`` (endpoint →
    ``count``/``p50_ms``/``p99_ms`` over the ``window`` most recent, ``total``/``sum_s`` over all so far).
    """

    def __init__(self, window: int = 2048):
        self.started = time.time()
        self._lock = threading.Lock()
        self._requests: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._latency_total: dict[str, list] = defaultdict(lambda: [0, 0.0])  # count, seconds: all 200s so far

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self._requests[endpoint][status] += 1
            if status == 200:
                self._latency[endpoint].append(seconds)
                total = self._latency_total[endpoint]
                total[0] += 1
                total[1] += seconds

    def snapshot(self) -> dict:
        """The counters as plain JSON-ready values."""
        with self._lock:
            requests = {e: {str(s): n for s, n in by.items()} for e, by in self._requests.items()}
            latency = {}
            for endpoint, values in self._latency.items():
                ms = np.array(values, dtype=np.float64) * 1000.0
                latency[endpoint] = {
                    "count": len(ms),
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "total": self._latency_total[endpoint][0],
                    "sum_s": self._latency_total[endpoint][1],
                }
        return {"uptime_s": time.time() - self.started, "requests": requests, "latency": latency}


def public_model_name(model: str) -> str:
    """What ``/health`` may say about the served model: a Hub id as is, a local folder by its last part only."""
    # a local folder's full path tells a caller about the machine, its last part does not
    return os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model

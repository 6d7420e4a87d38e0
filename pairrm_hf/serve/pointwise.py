"""Serving a distilled one-pass student (a one-label ``AutoModelForSequenceClassification``) on ``/get_reward``.

``pairrm serve --model STUDENT`` picks this service when the checkpoint is such a classifier: each response costs
one forward row, so OpenRLHF's remote reward protocol is answered pointwise (no pairs, no groups). The app, its
limits, API key, ``/health`` and ``/metrics`` are those of :func:`~pairrm_hf.serve.app.create_app`; the pairwise
endpoints answer 404.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import torch

from ..training.distillation import load_student, student_scores
from ..utils.version import __version__
from .batcher import RequestScope
from .protocol import Limits, RequestError
from .request_metrics import RequestMetrics, public_model_name

__all__ = ["PointwiseRewardService", "is_student_checkpoint"]


def is_student_checkpoint(model: str | os.PathLike) -> bool:
    """True when ``model`` (folder or Hub id) is a one-label sequence classifier rather than a PairRM/ranker."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(os.fspath(model))
    except (OSError, ValueError, KeyError):  # legacy PairRM configs and our ranker types are no transformers config
        return False
    architectures = getattr(config, "architectures", None) or []
    return config.num_labels == 1 and any(a.endswith("ForSequenceClassification") for a in architectures)


def _text_list(body: dict, name: str, limits: Limits, required: bool = True) -> list[str] | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise RequestError(name, f"{name} must be a list of str, got {type(value).__name__}")
    if len(value) > limits.max_items:
        raise RequestError(name, f"{name} has {len(value)} items; this server takes at most {limits.max_items}", 413)
    for k, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestError(f"{name}[{k}]", f"{name}[{k}] must be a str, got {type(item).__name__}")
    return value


class PointwiseRewardService:
    """A student reward model behind the ``pairrm serve`` app: ``/get_reward`` scores each response on its own.

    ``/get_reward`` request: OpenRLHF's ``{"query": [str], "prompts": [str], "labels": [...]}``; the response is
    ``query[k]`` minus its leading ``prompts[k]``, scored as the text pair ``(prompts[k], response)``; labels are
    not used (a student needs no reference). Response: ``{"rewards", "scores", "extra_logs"}`` as the pairwise
    server's. Forward passes are serialized (one model, one lock) and cut into ``batch_size`` rows.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        limits: Limits | None = None,
        model_name: str | None = None,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.limits = limits or Limits()
        self.model_name = public_model_name(model_name or str(getattr(model, "name_or_path", "") or "student"))
        self.requests = RequestMetrics()
        self._model_lock = threading.Lock()
        self._rows = 0

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> PointwiseRewardService:
        """Load a student folder/Hub id (``AutoModelForSequenceClassification`` with one label) and serve it."""
        net, tokenizer = load_student(model)
        target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net.to(target)
        if dtype:
            net.to(getattr(torch, dtype))
        for name in ("max_wait_ms", "max_batch_pairs", "batching", "backbone_config", "attention"):
            kwargs.pop(name, None)  # pairwise-batcher and PairRM-attention options: one forward per request here
        return cls(net, tokenizer, batch_size=batch_size, model_name=os.fspath(model), **kwargs)

    def scores(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """float32 ``[N]`` student scores of ``(prompts[k], responses[k])``."""
        with self._model_lock:
            got = student_scores(
                self.model,
                self.tokenizer,
                prompts,
                [[r] for r in responses],
                batch_size=self.batch_size,
                max_length=self.max_length,
            )
            self._rows += len(responses)
        return np.concatenate(got) if got else np.zeros(0, dtype=np.float32)

    def handle(self, endpoint: str, payload: Any, scope: RequestScope | None = None) -> dict:
        """Run one request; :class:`RequestError` (4xx) for bad input or a pairwise-only endpoint."""
        if endpoint != "get_reward":
            raise RequestError("path", f"this server runs a pointwise student: only /get_reward, not /{endpoint}", 404)
        if not isinstance(payload, dict):
            raise RequestError("body", f"the body must be a JSON object, got {type(payload).__name__}")
        queries = _text_list(payload, "query", self.limits)
        prompts = _text_list(payload, "prompts", self.limits, required=False)
        if prompts is not None and len(prompts) != len(queries):
            raise RequestError("prompts", f"prompts has {len(prompts)} items but query has {len(queries)}")
        sources = prompts if prompts is not None else [""] * len(queries)
        responses = [q[len(p) :] if p and q.startswith(p) else q for q, p in zip(queries, sources)]
        rewards = [float(x) for x in self.scores(sources, responses)] if queries else []
        return {
            "rewards": rewards,
            "scores": list(rewards),
            "extra_logs": {"pairrm_against_label": [0.0] * len(rewards)},
        }

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request for ``/metrics``."""
        self.requests.record(endpoint, status, seconds)

    def health(self) -> dict:
        """What ``/health`` returns."""
        return {
            "status": "ok",
            "model": self.model_name,
            "kind": "pointwise",
            "device": str(next(self.model.parameters()).device),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "batch_size": self.batch_size,
            "batching": False,
            "version": __version__,
            "pid": os.getpid(),
        }

    def metrics(self) -> dict:
        """What ``/metrics`` returns: requests by endpoint and status, latency, rows scored."""
        return {**self.requests.snapshot(), "batcher": {"rows": self._rows}}

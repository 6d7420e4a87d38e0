"""Dynamic batching across concurrent requests, in front of the one :class:`~pairrm_hf.ranking.engine.PairwiseEngine`.

Each request runs the ordinary :class:`~pairrm_hf.PairRM` method in its own worker thread, on a *view* of the
served PairRM whose engine is a :class:`BatchedEngine`. Tokenizing happens in the request's thread; every
``pair_logits`` call becomes a job in the :class:`PairBatcher` queue. The batcher's single thread collects the jobs
of concurrent requests and makes **one** ``engine.pair_logits`` call for all of them (their pairs share the
engine's length-bucketed batches), then hands each request its own slice. There is no second forward loop: the
engine's is the only one, and only the batcher thread calls it, so one model copy serves every request.

When to run a batch: as soon as every request that is currently computing has a job in the queue (no other job can
arrive, so waiting would only add latency; a lone request never waits), or after ``max_wait_ms`` since the first
queued job, or when the queued jobs reach ``max_batch_pairs`` ordered pairs. Adaptive schedules (``bubble``,
``sort``) ask for logits in rounds; each round is one job and joins whatever is running at that time.

A request's result does not depend on its batch-mates beyond float rounding of differently padded batches
(≤ 1e-5 in fp32): pairs are keyed by their token content, so identical rows of different requests are computed
once and every request gets back exactly the rows it asked for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..ranking.engine import EncodedExample, PairwiseEngine
from ..utils.checks import check_positive_int

__all__ = ["BatchedEngine", "Cancelled", "PairBatcher", "RequestScope"]


class Cancelled(Exception):
    """The request was cancelled by its client; its remaining work is dropped."""


class RequestScope:
    """One client request as the batcher sees it: a cancel flag and when it started."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.started = time.perf_counter()

    def cancel(self) -> None:
        """Mark the request as cancelled: its queued jobs are dropped before they reach the engine."""
        self.cancelled.set()


@dataclass
class _Job:
    examples: Sequence[EncodedExample]
    pairs: np.ndarray
    scope: RequestScope
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class _Stats:
    """Batcher counters for ``/metrics`` (updated by the batcher thread only, read under its lock)."""

    def __init__(self, window: int = 2048) -> None:
        self.batches = 0
        self.jobs = 0
        self.pairs = 0
        self.forward_calls = 0
        self.forward_rows = 0
        self.cancelled_jobs = 0
        self.failed_batches = 0
        self.queue_wait_s: deque[float] = deque(maxlen=window)
        self.jobs_per_batch: deque[int] = deque(maxlen=window)
        self.rows_per_forward: deque[float] = deque(maxlen=window)


class PairBatcher:
    """Collects ``pair_logits`` jobs from concurrent requests and runs them as one engine call.

    Args:
        engine: the engine that does the work (its ``batch_size``/``max_batch_tokens`` cut the forward passes).
        max_wait_ms: the longest a queued job waits for company before its batch runs.
        max_batch_pairs: stop collecting once the queued jobs hold this many ordered pairs.
        batching: ``False`` runs every job alone, in arrival order (the baseline of the load test).
    """

    def __init__(
        self,
        engine: PairwiseEngine,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int = 8192,
        batching: bool = True,
    ):
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        check_positive_int("max_batch_pairs", max_batch_pairs)
        self.engine = engine
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_pairs = int(max_batch_pairs)
        self.batching = bool(batching)
        self.stats = _Stats()
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._active = 0  # requests inside a PairRM call right now (each has at most one job queued)
        self._closed = False
        self._encode_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="pairrm-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ request side
    def enter(self) -> None:
        """A request starts computing (see :meth:`leave`); the batcher waits for active requests' jobs."""
        with self._cv:
            self._active += 1

    def leave(self) -> None:
        """A request stops computing; a batch waiting for it may run now."""
        with self._cv:
            self._active -= 1
            self._cv.notify_all()

    def encode(self, sources: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[EncodedExample]:
        """The engine's ``encode``, one request at a time (the tokenizer is shared by all request threads)."""
        with self._encode_lock:
            return self.engine.encode(sources, candidates)

    def pair_logits(self, examples: Sequence[EncodedExample], pairs: np.ndarray, scope: RequestScope) -> np.ndarray:
        """Queue one job and block until the batch holding it has run; raises :class:`Cancelled` if cancelled."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        if scope.cancelled.is_set():
            raise Cancelled()
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        job = _Job(examples, pairs, scope)
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(job)
            self._cv.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self, timeout: float = 5.0) -> None:
        """Stop the batcher thread after the queued jobs have run."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Jobs waiting for the engine."""
        with self._cv:
            return len(self._queue)

    # ------------------------------------------------------------------------------------ batcher side
    def _take(self) -> list[_Job] | None:
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            if not self.batching:
                return [self._queue.pop(0)]
            deadline = self._queue[0].enqueued + self.max_wait_s
            while True:
                pairs = sum(len(j.pairs) for j in self._queue)
                # every computing request has its job queued: nobody else can join, so run now
                if len(self._queue) >= self._active or pairs >= self.max_batch_pairs or self._closed:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            jobs, total = [], 0
            while self._queue and (not jobs or total + len(self._queue[0].pairs) <= self.max_batch_pairs):
                total += len(self._queue[0].pairs)
                jobs.append(self._queue.pop(0))
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            live = []
            for job in jobs:
                if job.scope.cancelled.is_set():
                    job.error = Cancelled()
                    job.done.set()
                    self.stats.cancelled_jobs += 1
                else:
                    live.append(job)
            if live:
                self._run(live)

    def _run(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            results = self._merged_logits(jobs)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request, do not fail its batch-mates
            self.stats.failed_batches += 1
            if len(jobs) == 1:
                jobs[0].error = exc
                jobs[0].done.set()
                return
            for job in jobs:  # rerun one by one: only the job that fails alone gets an error
                self._run([job])
            return
        stats = self.engine.last_stats
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.pairs += sum(len(j.pairs) for j in jobs)
        self.stats.forward_calls += stats.get("forward_calls", 0)
        self.stats.forward_rows += stats.get("rows", 0)
        self.stats.jobs_per_batch.append(len(jobs))
        if stats.get("forward_calls"):
            self.stats.rows_per_forward.append(stats["rows"] / stats["forward_calls"])
        for job, result in zip(jobs, results):
            self.stats.queue_wait_s.append(start - job.enqueued)
            job.result = result
            job.done.set()

    def _merged_logits(self, jobs: list[_Job]) -> list[np.ndarray]:
        if len(jobs) == 1:
            return [self.engine.pair_logits(jobs[0].examples, jobs[0].pairs)]
        # Keys name distinct token sequences within one encode call; re-key by content across the merged calls so
        # rows of different requests never collide and identical rows are computed once.
        keys: dict[tuple[int, ...], int] = {}
        examples: list[EncodedExample] = []
        pairs, sizes = [], []
        for job in jobs:
            offset = len(examples)
            for e in job.examples:
                source_key = keys.setdefault(tuple(e.source), len(keys))
                cand_keys = tuple(keys.setdefault((-1, *body), len(keys)) for body in e.candidates)
                examples.append(replace(e, source_key=source_key, candidate_keys=cand_keys))
            shifted = job.pairs.copy()
            shifted[:, 0] += offset
            pairs.append(shifted)
            sizes.append(len(shifted))
        logits = self.engine.pair_logits(examples, np.concatenate(pairs))
        return np.split(logits, np.cumsum(sizes)[:-1])

    def snapshot(self) -> dict:
        """Counters and recent distributions for ``/metrics``."""
        s = self.stats
        waits = np.array(s.queue_wait_s, dtype=np.float64) * 1000.0
        return {
            "batching": self.batching,
            "max_wait_ms": self.max_wait_s * 1000.0,
            "batches": s.batches,
            "jobs": s.jobs,
            "pairs": s.pairs,
            "forward_calls": s.forward_calls,
            "forward_rows": s.forward_rows,
            "cancelled_jobs": s.cancelled_jobs,
            "failed_batches": s.failed_batches,
            "queued_jobs": self.queued,
            "jobs_per_batch_mean": float(np.mean(s.jobs_per_batch)) if s.jobs_per_batch else 0.0,
            # batch fill: rows per forward pass over the engine's batch_size (1.0 = every pass full)
            "batch_fill": float(np.mean(s.rows_per_forward)) / self.engine.batch_size if s.rows_per_forward else 0.0,
            "queue_wait_ms_p50": float(np.percentile(waits, 50)) if len(waits) else 0.0,
            "queue_wait_ms_p99": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        }


class BatchedEngine:
    """A stand-in for :class:`PairwiseEngine` inside one request: ``encode`` and ``pair_logits`` go through the
    batcher, everything else (``device``, ``model``, ``batch_size``, …) is the real engine's."""

    def __init__(self, batcher: PairBatcher, scope: RequestScope):
        self._batcher = batcher
        self._scope = scope

    def encode(self, sources: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[EncodedExample]:
        """Tokenize (serialized with other requests' tokenizing)."""
        return self._batcher.encode(sources, candidates)

    def pair_logits(self, examples: Sequence[EncodedExample], pairs) -> np.ndarray:
        """Logits of these pairs, computed in a batch shared with concurrent requests."""
        return self._batcher.pair_logits(examples, pairs, self._scope)

    def __getattr__(self, name: str):
        return getattr(self._batcher.engine, name)

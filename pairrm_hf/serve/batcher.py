"""Dynamic batching across concurrent requests, in front of the one :class:`~pairrm_hf.ranking.engine.PairwiseEngine`.

Each request runs the ordinary :class:`~pairrm_hf.PairRM` method in its own worker thread, on a *view* of the
served PairRM whose engine is a :class:`BatchedEngine`. Tokenizing happens in the request's thread, concurrently
with other requests' (the tokenizer backend is thread-safe and releases the GIL, so one large text does not hold up
anyone else's); every ``pair_logits`` call becomes a job in the :class:`PairBatcher` queue. The batcher's single
thread runs the queued jobs in **steps** of at most ``step_pairs`` ordered pairs (default: the engine's
``batch_size``, i.e. one forward batch): each step is **one** ``engine.pair_logits`` call holding pairs of every
live job, and each request gets back its own rows once all of them have run. There is no second forward loop: the
engine's is the only one, and only the batcher thread calls it, so one model copy serves every request.

Steps make the server fair and cancellable:

* a step shares its pairs max-min fairly among the live jobs (smallest remaining job first), so a 1-pair request
  that arrives behind a job of a million pairs waits for at most one step, not for the big job;
* before every step the batcher drops the jobs whose client went away (:meth:`RequestScope.cancel`), so an
  abandoned request stops costing compute within one forward batch;
* a job's pairs run longest first in contiguous slices, so a big job alone is cut into the same length buckets the
  engine would have made.

When to start a job: as soon as every request that is currently computing has a job in the queue (no other job can
arrive, so waiting would only add latency; a lone request never waits), or after ``max_wait_ms`` since the first
queued job, or when the queued jobs reach ``max_batch_pairs`` ordered pairs; once any job is running, steps follow
each other without waiting. Adaptive schedules (``bubble``, ``sort``) ask for logits in rounds; each round is one job
and joins whatever is running at that time.

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


@dataclass(eq=False)  # jobs are compared by identity (the queue removes this one, not an equal one)
class _Job:
    """One ``pair_logits`` call: its distinct rows run longest first (``order``), ``cursor`` of them done."""

    examples: Sequence[EncodedExample]
    pairs: np.ndarray  # the distinct ordered pairs, longest row first
    inverse: np.ndarray  # asked-for pair k is pairs[inverse[k]]
    scope: RequestScope
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    values: np.ndarray | None = None
    cursor: int = 0
    started: float | None = None
    result: np.ndarray | None = None
    error: BaseException | None = None

    @property
    def remaining(self) -> int:
        return len(self.pairs) - self.cursor


def _plan(examples: Sequence[EncodedExample], pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``pairs`` (same token content), longest first, and where each asked-for pair is."""
    keys = np.array(
        [
            (examples[ex].source_key, examples[ex].candidate_keys[i], examples[ex].candidate_keys[j])
            for ex, i, j in pairs.tolist()
        ],
        dtype=np.int64,
    )
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    distinct = pairs[first]
    lengths = np.array(
        [
            len(examples[ex].source) + len(examples[ex].candidates[i]) + len(examples[ex].candidates[j])
            for ex, i, j in distinct.tolist()
        ],
        dtype=np.int64,
    )
    order = np.argsort(-lengths, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return distinct[order], rank[inverse.reshape(-1)]


class _Stats:
    """Batcher counters for ``/metrics`` (updated by the batcher thread only, read under its lock)."""

    def __init__(self, window: int = 2048) -> None:
        self.batches = 0
        self.jobs = 0
        self.pairs = 0
        self.forward_calls = 0
        self.forward_rows = 0
        self.cancelled_jobs = 0
        self.cancelled_pairs = 0  # distinct rows of cancelled jobs that were never computed
        self.failed_batches = 0
        self.queue_wait_s: deque[float] = deque(maxlen=window)
        self.jobs_per_batch: deque[int] = deque(maxlen=window)
        self.rows_per_forward: deque[float] = deque(maxlen=window)


class PairBatcher:
    """Collects ``pair_logits`` jobs from concurrent requests and runs them in shared, cancellable steps.

    Args:
        engine: the engine that does the work (its ``batch_size``/``max_batch_tokens`` cut the forward passes).
        max_wait_ms: the longest a queued job waits for company before it starts.
        max_batch_pairs: start at once when the queued jobs hold this many ordered pairs.
        batching: ``False`` runs every job alone, in arrival order (the baseline of the load test).
        step_pairs: most distinct ordered pairs per engine call (default: the engine's ``batch_size``, one forward
            batch): how long a new request can wait behind running ones, and how late a cancellation takes effect.
    """

    def __init__(
        self,
        engine: PairwiseEngine,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int = 8192,
        batching: bool = True,
        step_pairs: int | None = None,
    ):
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        check_positive_int("max_batch_pairs", max_batch_pairs)
        check_positive_int("step_pairs", step_pairs, allow_none=True)
        self.engine = engine
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_pairs = int(max_batch_pairs)
        self.batching = bool(batching)
        self.step_pairs = int(step_pairs or engine.batch_size)
        self.stats = _Stats()
        self._cv = threading.Condition()
        self._queue: list[_Job] = []  # jobs not finished yet, in arrival order (started ones included)
        self._active = 0  # requests inside a PairRM call right now (each has at most one job queued)
        self._closed = False
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
        """The engine's ``encode``, in the calling request's thread (concurrent requests tokenize side by side)."""
        return self.engine.encode(sources, candidates)

    def pair_logits(self, examples: Sequence[EncodedExample], pairs: np.ndarray, scope: RequestScope) -> np.ndarray:
        """Queue one job and block until all its steps have run; raises :class:`Cancelled` if cancelled."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        if scope.cancelled.is_set():
            raise Cancelled()
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        distinct, inverse = _plan(examples, pairs)  # here, in the request's thread: a bad index fails this job only
        job = _Job(examples, distinct, inverse, scope)
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
        """Jobs not finished yet (waiting or part-way through)."""
        with self._cv:
            return len(self._queue)

    # ------------------------------------------------------------------------------------ batcher side
    def _finish(self, job: _Job, error: BaseException | None = None) -> None:
        # under self._cv
        self._queue.remove(job)
        if error is None:
            job.result = job.values[job.inverse]
        job.error = error
        job.done.set()

    def _take(self) -> list[tuple[_Job, int]] | None:
        """The next step: ``(job, rows)`` pairs, the next ``rows`` of each job's remaining rows."""
        with self._cv:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cv.wait()
                for job in [j for j in self._queue if j.scope.cancelled.is_set()]:
                    self.stats.cancelled_jobs += 1
                    self.stats.cancelled_pairs += job.remaining
                    self._finish(job, Cancelled())
                if self._queue:
                    break
            if not self.batching:
                job = self._queue[0]
                return [(job, min(job.remaining, self.step_pairs))]
            if all(j.started is None for j in self._queue):
                deadline = self._queue[0].enqueued + self.max_wait_s
                while True:
                    pairs = sum(j.remaining for j in self._queue)
                    # every computing request has its job queued: nobody else can join, so run now
                    if len(self._queue) >= self._active or pairs >= self.max_batch_pairs or self._closed:
                        break
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
            # max-min fair shares of one step, smallest job first (ties: first come)
            live = sorted(
                (j for j in self._queue if not j.scope.cancelled.is_set()), key=lambda j: (j.remaining, j.enqueued)
            )
            step, budget = [], self.step_pairs
            for k, job in enumerate(live):
                if budget <= 0:
                    break
                share = max(1, budget // (len(live) - k))
                rows = min(job.remaining, share)
                step.append((job, rows))
                budget -= rows
            return step

    def _loop(self) -> None:
        while True:
            step = self._take()
            if step is None:
                return
            if step:
                self._run(step)

    def _run(self, step: list[tuple[_Job, int]]) -> None:
        start = time.perf_counter()
        for job, _ in step:
            if job.started is None:
                job.started = start
                self.stats.queue_wait_s.append(start - job.enqueued)
        try:
            results = self._merged_logits(step)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request, do not fail its batch-mates
            self.stats.failed_batches += 1
            if len(step) == 1:
                with self._cv:
                    self._finish(step[0][0], exc)
                return
            for part in step:  # rerun one by one: only the job that fails alone gets an error
                self._run([part])
            return
        stats = self.engine.last_stats
        self.stats.batches += 1
        self.stats.pairs += sum(rows for _, rows in step)
        self.stats.forward_calls += stats.get("forward_calls", 0)
        self.stats.forward_rows += stats.get("rows", 0)
        self.stats.jobs_per_batch.append(len(step))
        if stats.get("forward_calls"):
            self.stats.rows_per_forward.append(stats["rows"] / stats["forward_calls"])
        with self._cv:
            for (job, rows), values in zip(step, results):
                if job.values is None:
                    job.values = np.zeros(len(job.pairs), dtype=np.float32)
                job.values[job.cursor : job.cursor + rows] = values
                job.cursor += rows
                if job.remaining == 0:
                    self.stats.jobs += 1
                    self._finish(job)

    def _merged_logits(self, step: list[tuple[_Job, int]]) -> list[np.ndarray]:
        if len(step) == 1:
            job, rows = step[0]
            return [self.engine.pair_logits(job.examples, job.pairs[job.cursor : job.cursor + rows])]
        # Keys name distinct token sequences within one encode call; re-key by content across the merged calls so
        # rows of different requests never collide and identical rows are computed once.
        keys: dict[tuple[int, ...], int] = {}
        examples: list[EncodedExample] = []
        pairs, sizes = [], []
        for job, rows in step:
            part = job.pairs[job.cursor : job.cursor + rows]
            used = np.unique(part[:, 0])  # only the examples this slice touches
            remap = {int(ex): len(examples) + k for k, ex in enumerate(used)}
            for ex in used.tolist():
                e = job.examples[ex]
                source_key = keys.setdefault(tuple(e.source), len(keys))
                cand_keys = tuple(keys.setdefault((-1, *body), len(keys)) for body in e.candidates)
                examples.append(replace(e, source_key=source_key, candidate_keys=cand_keys))
            shifted = part.copy()
            shifted[:, 0] = [remap[ex] for ex in part[:, 0].tolist()]
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
            "step_pairs": self.step_pairs,
            "batches": s.batches,
            "jobs": s.jobs,
            "pairs": s.pairs,
            "forward_calls": s.forward_calls,
            "forward_rows": s.forward_rows,
            "cancelled_jobs": s.cancelled_jobs,
            "cancelled_pairs": s.cancelled_pairs,
            "failed_batches": s.failed_batches,
            "queued_jobs": self.queued,
            "jobs_per_batch_mean": float(np.mean(s.jobs_per_batch)) if s.jobs_per_batch else 0.0,
            # batch fill: rows per forward pass over the engine's batch_size (1.0 = every pass full)
            "batch_fill": float(np.mean(s.rows_per_forward)) / self.engine.batch_size if s.rows_per_forward else 0.0,
            "queue_wait_ms_p50": float(np.percentile(waits, 50)) if len(waits) else 0.0,
            "queue_wait_ms_p99": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        }


class BatchedEngine(PairwiseEngine):
    """A view of the served :class:`PairwiseEngine` for one request: same model, encoder and options, while
    ``encode`` and ``pair_logits`` go through the batcher. The served engine itself is never changed."""

    def __init__(self, batcher: PairBatcher, scope: RequestScope):
        self.adopt(batcher.engine)
        self._batcher = batcher
        self._scope = scope

    def encode(self, sources: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[EncodedExample]:
        """Tokenize, side by side with other requests' tokenizing."""
        return self._batcher.encode(sources, candidates)

    def pair_logits(self, examples: Sequence[EncodedExample], pairs) -> np.ndarray:
        """Logits of these pairs, computed in a batch shared with concurrent requests."""
        return self._batcher.pair_logits(examples, pairs, self._scope)

"""Callables that run a PairRM task over batches of rows: ``datasets.Dataset.map`` and Ray Data's ``map_batches``.

Each loads its model lazily, once per process (and device), and runs the same row tasks as the ``pairrm``
command (:mod:`pairrm_hf.jobs.tasks`), so a row scores the same through ``map`` as through the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.ranker import device_for_rank, shared_pairrm
from .tasks import RowError, TaskSpec, prepare_row, run_task

__all__ = ["BatchFn", "batch_fn", "rank_batch_fn", "PairRMPredictor"]


def _columns_out(outputs: list[dict], n: int) -> dict[str, list]:
    keys = list(outputs[0]) if outputs else []
    return {key: [o[key] for o in outputs] for key in keys}


class BatchFn:
    """``(batch, rank=None) -> new columns`` for ``Dataset.map(batched=True, with_rank=True)``; picklable.

    The model loads lazily, once per process, on ``device`` or else ``cuda:<rank % GPUs>`` (CPU without CUDA).
    Tasks ``rank``, ``compare`` and ``score`` (one output row per input row); a bad row raises ValueError naming
    its position in the batch and the field.
    """

    def __init__(
        self,
        spec: TaskSpec,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
    ):
        self.spec, self.model, self.device, self.dtype, self.batch_size = (
            spec,
            os.fspath(model),
            device,
            dtype,
            batch_size,
        )

    def __call__(self, batch: Mapping[str, Sequence], rank: int | None = None) -> dict[str, list]:
        """New columns for a column-oriented batch."""
        if self.spec.task == "label":
            raise ValueError(
                "label changes the number of rows; use PairRMPredictor (Ray Data), the pairrm label command or "
                "label_preferences"
            )
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        return _columns_out(self.outputs(batch, rank, list(range(n))), n)

    def outputs(self, batch: Mapping[str, Sequence], rank: int | None, indices: Sequence[int]) -> list[Any]:
        """The task's output of each row (a dict of new columns; for ``label`` a list of them, one per pair).

        ``indices`` are the rows' positions in the whole input (``best_vs_random`` seeds its choice with them).
        """
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        items = []
        for k in range(n):
            try:
                items.append(prepare_row({c: batch[c][k] for c in columns}, self.spec))
            except RowError as err:
                raise ValueError(f"batch row {k}: {err}") from None
        rm = shared_pairrm(self.model, device_for_rank(self.device, rank), self.dtype, self.batch_size)
        outputs, _ = run_task(rm, self.spec, items, [int(i) for i in indices])
        return outputs


def batch_fn(
    task: str = "rank",
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    **spec_kwargs,
) -> BatchFn:
    """A :class:`BatchFn` for ``task`` with :class:`TaskSpec` options (columns, aggregation, …)."""
    return BatchFn(TaskSpec(task=task, **spec_kwargs), model, device=device, dtype=dtype, batch_size=batch_size)


def rank_batch_fn(
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    **spec_kwargs,
) -> BatchFn:
    """Ranking for ``datasets.map``: adds ``pairrm_scores`` and ``pairrm_ranks``.

    >>> ds = ds.map(rank_batch_fn(model="llm-blender/PairRM-hf"), batched=True, with_rank=True, num_proc=2)  # doctest: +SKIP
    """
    return batch_fn("rank", model, device=device, dtype=dtype, batch_size=batch_size, **spec_kwargs)


def _object_column(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):
        arr[k] = v  # element by element: equal-length lists must stay lists, not become a 2-D array
    return arr


class PairRMPredictor:
    """A callable class for Ray Data's ``map_batches`` (Ray is not imported here).

    ``ds.map_batches(PairRMPredictor, fn_constructor_kwargs={"model": ...}, concurrency=4, num_gpus=1,
    batch_size=256)``: each actor loads the model once; each call returns the batch with the new columns added.
    Works on numpy batches (Ray's default, list columns as object arrays) and on plain dicts of lists.

    ``task="label"`` returns one row per preference pair (the input row's columns plus ``chosen``, ``rejected``,
    ``chosen_index``, … as ``pairrm label`` writes them). ``best_vs_random`` seeds each row's choice with its
    position in the input: pass ``index_column`` naming a column that holds it (Ray Data batches do not know it),
    so the labels equal the CLI's.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        task: str = "rank",
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        index_column: str | None = None,
        **spec_kwargs,
    ):
        self.fn = batch_fn(task, model, device=device, dtype=dtype, batch_size=batch_size, **spec_kwargs)
        self.index_column = index_column
        # Ray pins each actor to its GPU(s) through CUDA_VISIBLE_DEVICES, so rank 0 is the right device.
        shared_pairrm(self.fn.model, device_for_rank(device, 0), dtype, batch_size)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch with the task's columns added (``label``: one row per preference pair)."""
        numpy_batch = any(isinstance(v, np.ndarray) for v in batch.values())
        if self.fn.spec.task == "label":
            return self._label(batch, numpy_batch)
        new = self.fn(batch, 0)
        out = dict(batch)
        for key, values in new.items():
            out[key] = (
                _object_column(values)
                if numpy_batch and values and isinstance(values[0], list)
                else (np.asarray(values) if numpy_batch else values)
            )
        return out

    def _label(self, batch: Mapping[str, Any], numpy_batch: bool) -> dict[str, Any]:
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        indices = list(batch[self.index_column]) if self.index_column is not None else list(range(n))
        outputs = self.fn.outputs(batch, 0, indices)
        rows = [{c: batch[c][k] for c in columns} for k in range(n)]
        pairs = [{**row, **pair} for row, out in zip(rows, outputs) for pair in out]
        keys = columns + [k for k in (pairs[0] if pairs else {}) if k not in columns]
        out: dict[str, Any] = {}
        for key in keys:
            values = [p[key] for p in pairs]
            out[key] = _object_column(values) if numpy_batch else values
        return out

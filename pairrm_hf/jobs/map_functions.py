"""Callables that run a PairRM task over batches of rows: ``datasets.Dataset.map`` and Ray Data's ``map_batches``.

Each loads its model lazily, once per process (and device), and runs the same row tasks as the ``pairrm``
command (:mod:`pairrm_hf.jobs.tasks`), so a row scores the same through ``map`` as through the CLI.

``backend=``, ``quantize="int8"``, ``calibration=`` and ``calibration_size=`` are the file jobs' ``--backend``,
``--quantize``, ``--calibration`` and ``--calibration-size``: the model comes from the same process-wide
:func:`~pairrm_hf.ranking.ranker.shared_pairrm` with the same key, so a process loads one quantized model once
(and a ``map`` after a job in the same process reuses the job's). Options and calibration rows are checked when
the callable is built, before any batch; the callable then holds the checked rows (not a model, not a file
handle), so it pickles to ``datasets`` workers and Ray actors that need not see the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.openvino_backend import requested_backend
from ..ranking.quantization import check_quantize
from ..ranking.ranker import PairRM, device_for_rank, shared_pairrm
from .runner import checked_load_calibration
from .tasks import RowError, TaskSpec, prepare_row, run_task

__all__ = ["BatchFn", "batch_fn", "rank_batch_fn", "PairRMPredictor"]


def _columns_out(outputs: list[dict], n: int) -> dict[str, list]:
    keys = list(outputs[0]) if outputs else []
    return {key: [o[key] for o in outputs] for key in keys}


class BatchFn:
    """``(batch, rank=None) -> new columns`` for ``Dataset.map(batched=True, with_rank=True)``; picklable.

    The model loads lazily, once per process, on ``device`` or else ``cuda:<rank % GPUs>`` (CPU without CUDA;
    always the CPU with ``quantize``). Tasks ``rank``, ``compare`` and ``score`` (one output row per input row); a
    bad row raises ValueError naming its position in the batch and the field.

    ``backend`` (``"auto"``, ``"torch"``, ``"openvino"``; ``None``: ``$PAIRRM_BACKEND``, else auto), ``quantize``
    (``"int8"``), ``calibration`` (a JSONL path, a list of ``{"prompt", "candidates"}`` rows or a
    :class:`~pairrm_hf.ranking.openvino_quantization.Calibration`) and ``calibration_size`` are
    :meth:`PairRM.from_pretrained`'s. They are checked here, before any batch: a bad calibration file raises
    ``ValueError`` naming the file, row and field, and a calibration where it cannot apply (no int8, the torch
    backend, or ``auto`` picking torch) is refused. :attr:`calibration` holds the checked rows.
    """

    def __init__(
        self,
        spec: TaskSpec,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        backend: str | None = None,
        quantize: str | None = None,
        calibration: Any = None,
        calibration_size: int | None = None,
    ):
        check_quantize(quantize, device)  # int8 on CUDA is refused now, not on the first batch
        requested_backend(backend)  # a misspelt backend too
        self.spec, self.model, self.device, self.dtype, self.batch_size = (
            spec,
            os.fspath(model),
            device,
            dtype,
            batch_size,
        )
        self.backend, self.quantize = backend, quantize
        #: the calibration rows, read and checked (a picklable value, not a path), or None
        self.calibration = checked_load_calibration(
            calibration, calibration_size, quantize=quantize, backend=backend, dtype=dtype
        )

    def shared_model(self, rank: int | None = None) -> PairRM:
        """This process's model for these options (:func:`shared_pairrm`, loaded on the first call).

        With ``quantize`` and no ``device`` the engine picks the CPU, as the file jobs leave it (int8 runs on the
        CPU only, so the process's GPU would be refused): the key is then the job's, and one model serves both.
        """
        device = self.device if self.device is not None or self.quantize is not None else device_for_rank(None, rank)
        return shared_pairrm(
            self.model,
            device,
            self.dtype,
            self.batch_size,
            backend=self.backend,
            quantize=self.quantize,
            calibration=self.calibration,
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
        outputs, _ = run_task(self.shared_model(rank), self.spec, items, [int(i) for i in indices])
        return outputs


def batch_fn(
    task: str = "rank",
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    backend: str | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    calibration_size: int | None = None,
    **spec_kwargs,
) -> BatchFn:
    """A :class:`BatchFn` for ``task`` with :class:`TaskSpec` options (columns, aggregation, …) and the model
    options of :class:`BatchFn` (``backend``, ``quantize``, ``calibration``, ``calibration_size``)."""
    return BatchFn(
        TaskSpec(task=task, **spec_kwargs),
        model,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        backend=backend,
        quantize=quantize,
        calibration=calibration,
        calibration_size=calibration_size,
    )


def rank_batch_fn(model: str = DEFAULT_MODEL, **options: Any) -> BatchFn:
    """Ranking for ``datasets.map``: adds ``pairrm_scores`` and ``pairrm_ranks``. ``options`` are those of
    :func:`batch_fn` (model options such as ``device``, ``backend``, ``quantize``, ``calibration``, and
    :class:`TaskSpec` options).

    >>> ds = ds.map(rank_batch_fn(model="llm-blender/PairRM-hf"), batched=True, with_rank=True, num_proc=2)  # doctest: +SKIP
    >>> int8 = rank_batch_fn(model="llm-blender/PairRM-hf", quantize="int8", calibration="calib.jsonl")  # doctest: +SKIP
    """
    return batch_fn("rank", model, **options)


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

    ``backend``, ``quantize``, ``calibration`` and ``calibration_size`` are :class:`BatchFn`'s (int8 runs on the
    CPU: give such actors ``num_cpus``, not ``num_gpus``). The actor checks them and loads the model when it is
    built, before its first batch; a calibration path must be readable where the actor runs (or pass the rows).
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
        backend: str | None = None,
        quantize: str | None = None,
        calibration: Any = None,
        calibration_size: int | None = None,
        **spec_kwargs,
    ):
        self.fn = batch_fn(
            task,
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            backend=backend,
            quantize=quantize,
            calibration=calibration,
            calibration_size=calibration_size,
            **spec_kwargs,
        )
        self.index_column = index_column
        # Ray pins each actor to its GPU(s) through CUDA_VISIBLE_DEVICES, so rank 0 is the right device.
        self.fn.shared_model(0)

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

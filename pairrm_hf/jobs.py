"""Chunked, resumable, shardable jobs over row tables, and batch hooks for ``datasets.map`` and Ray.

A job reads the whole input, checks every row (before any forward pass), splits row indices into chunks of
``chunk_size`` and writes each finished chunk atomically to ``<output>.parts/chunk-NNNNNN.jsonl``, next to a
``manifest.json`` recording the input fingerprint, the task and the chunk size. A rerun of the same command skips
finished chunks, so a job killed at any moment loses and duplicates nothing. When every chunk is there, the output
is assembled in input order and written atomically, and the parts folder is removed.

Sharding: chunk ``k`` belongs to shard ``k % COUNT`` (round-robin, so shards get similar work even when long rows
cluster). Under ``accelerate launch`` (``WORLD_SIZE`` > 1) the chunks of a shard are split the same way between
processes; the main process waits for the others and assembles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .io import InputError, RowProblem, atomic_write_text, input_fingerprint, read_table, write_rows
from .loading import DEFAULT_MODEL
from .tasks import RowError, TaskSpec, prepare_row, run_task

__all__ = ["JobConfig", "run_job", "merge_job", "parts_dir", "BatchFn", "rank_batch_fn", "batch_fn", "PairRMPredictor"]

MANIFEST_VERSION = 1


@dataclass
class JobConfig:
    """One ``pairrm`` file job. ``shard`` is ``(index, count)``; ``on_error`` is ``"raise"`` or ``"skip"``."""

    input: str
    output: str
    spec: TaskSpec = field(default_factory=TaskSpec)
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 16
    backbone_config: str | None = None
    split: str | None = None
    limit: int | None = None
    chunk_size: int = 1000
    on_error: str = "raise"
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    keep_parts: bool = False
    progress: bool = True

    def manifest(self) -> dict:
        """Everything that decides the contents of the chunks (batch size and device do not)."""
        return {
            "version": MANIFEST_VERSION, "input": input_fingerprint(self.input, self.split), "input_arg": self.input,
            "split": self.split, "limit": self.limit, "chunk_size": self.chunk_size, "on_error": self.on_error,
            "model": self.model, "dtype": self.dtype, "backbone_config": self.backbone_config, "spec": self.spec.to_dict(),
        }  # fmt: skip


def parts_dir(output: str | os.PathLike) -> str:
    """The work folder of a job writing ``output``."""
    return os.fspath(output) + ".parts"


def _chunk_path(parts: str, k: int) -> str:
    return os.path.join(parts, f"chunk-{k:06d}.jsonl")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_rows(cfg: JobConfig):
    """Read and check every row; returns (table, prepared items by index, problems)."""
    if cfg.on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    if not isinstance(cfg.chunk_size, int) or cfg.chunk_size < 1:
        raise InputError(f"chunk_size must be a positive int, got {cfg.chunk_size!r}")
    table = read_table(cfg.input, split=cfg.split, limit=cfg.limit)
    problems = {p.index: p for p in table.problems}
    items: dict[int, dict] = {}
    for i, row in enumerate(table.rows):
        if i in problems:
            continue
        try:
            items[i] = prepare_row(row, cfg.spec)
        except RowError as err:
            problems[i] = RowProblem(i, table.locations[i], str(err), row)
    problems = [problems[i] for i in sorted(problems)]
    if problems and cfg.on_error == "raise":
        first = problems[0]
        more = f" ({len(problems) - 1} more bad rows; --on-error skip writes them to a rejects file)" if len(problems) > 1 else ""
        raise InputError(f"{table.name}: {first.location}: {first.reason}{more}")
    return table, items, problems


def _distributed(device: str | None = None) -> tuple[Any, int, int]:
    """(accelerate state or None, process index, process count) under ``accelerate launch``/``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None, 0, 1
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate leaves CPU-only processes undistributed, and each would redo every chunk.
    state = PartialState(cpu=not torch.cuda.is_available() or str(device).startswith("cpu"))
    if state.num_processes != world:
        raise RuntimeError(f"WORLD_SIZE is {world} but accelerate set up {state.num_processes} process(es)")
    return state, state.process_index, state.num_processes


def _prepare_parts(cfg: JobConfig, manifest: dict, is_main: bool, state) -> str:
    parts = parts_dir(cfg.output)
    if is_main:
        if cfg.overwrite and os.path.isdir(parts):
            shutil.rmtree(parts)
        if os.path.exists(cfg.output) and not os.path.isdir(parts) and not cfg.overwrite:
            raise InputError(f"{cfg.output}: already exists; pass --overwrite to compute it again")
        os.makedirs(parts, exist_ok=True)
        path = os.path.join(parts, "manifest.json")
        if not os.path.exists(path):
            atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    if state is not None:
        state.wait_for_everyone()
    _check_manifest(parts, manifest)
    return parts


def _check_manifest(parts: str, manifest: dict) -> None:
    path = os.path.join(parts, "manifest.json")
    try:
        found = json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        # Another shard's first run creates it; make ours.
        os.makedirs(parts, exist_ok=True)
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
        return
    if found != json.loads(json.dumps(manifest)):
        keys = sorted(k for k in set(found) | set(manifest) if found.get(k) != json.loads(json.dumps(manifest.get(k))))
        raise InputError(
            f"{parts}: unfinished job with different {', '.join(keys)} (input changed or other options); "
            "rerun with the same options, or pass --overwrite to start over"
        )


def _my_chunks(num_chunks: int, shard: tuple[int, int], proc: int, nproc: int) -> list[int]:
    index, count = shard
    return [k for k in range(num_chunks) if k % count == index and (k // count) % nproc == proc]


def _load_model(cfg: JobConfig, state):
    device = cfg.device
    if device is None and state is not None:
        device = str(state.device)  # accelerate picks cuda:<local rank> (or cpu with --cpu)
    return _cached_model(cfg.model, device, cfg.dtype, cfg.batch_size, cfg.backbone_config)


def _write_rejects(cfg: JobConfig, problems: list[RowProblem]) -> str | None:
    path = cfg.output + ".rejects.jsonl"
    if not problems:
        return None
    lines = []
    for p in problems:
        raw = p.raw if isinstance(p.raw, (dict, list, str, int, float, bool)) or p.raw is None else repr(p.raw)
        lines.append(json.dumps({"index": p.index, "location": p.location, "reason": p.reason, "row": raw}, ensure_ascii=False, default=repr))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def run_job(cfg: JobConfig, *, merge_only: bool = False) -> dict:
    """Run (or resume) a job; returns a summary dict. Raises :class:`InputError` for bad input/options.

    With a shard other than ``(0, 1)`` the job computes its chunks and stops; :func:`merge_job` assembles.
    """
    start = time.perf_counter()
    table, items, problems = _check_rows(cfg)
    state, proc, nproc = _distributed(cfg.device)
    is_main = state is None or state.is_main_process
    index, count = cfg.shard
    if not (0 <= index < count):
        raise InputError(f"shard must be INDEX/COUNT with 0 <= INDEX < COUNT, got {index}/{count}")
    manifest = cfg.manifest()
    parts = _prepare_parts(cfg, manifest, is_main, state)
    n = len(table.rows)
    num_chunks = math.ceil(n / cfg.chunk_size)
    mine = [] if merge_only else _my_chunks(num_chunks, cfg.shard, proc, nproc)
    todo = [k for k in mine if not os.path.exists(_chunk_path(parts, k))]
    summary = {"rows": n, "chunks": num_chunks, "chunks_done_before": len(mine) - len(todo), "chunks_computed": 0,
               "rows_computed": 0, "pairs": 0, "forward_rows": 0, "rejected": len(problems), "output": None,
               "process": f"{proc}/{nproc}" if state is not None else None}  # fmt: skip
    if is_main:
        summary["rejects"] = _write_rejects(cfg, problems)
    if todo:
        rm = _load_model(cfg, state)
        rows_todo = sum(len(range(k * cfg.chunk_size, min(n, (k + 1) * cfg.chunk_size))) for k in todo)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=rows_todo, unit="row", desc=f"pairrm {cfg.spec.task}", position=proc, disable=None)
        for k in todo:
            indices = [i for i in range(k * cfg.chunk_size, min(n, (k + 1) * cfg.chunk_size)) if i in items]
            outputs, pairs = run_task(rm, cfg.spec, [items[i] for i in indices], indices)
            summary["pairs"] += pairs
            summary["forward_rows"] += int(rm.engine.last_stats.get("rows", 0))
            text = "".join(json.dumps({"i": i, "out": o}, ensure_ascii=False) + "\n" for i, o in zip(indices, outputs))
            atomic_write_text(_chunk_path(parts, k), text)
            summary["chunks_computed"] += 1
            rows_in_chunk = min(n, (k + 1) * cfg.chunk_size) - k * cfg.chunk_size
            summary["rows_computed"] += rows_in_chunk
            if bar is not None:
                bar.update(rows_in_chunk)
        if bar is not None:
            bar.close()
    if state is not None:
        state.wait_for_everyone()
    if is_main and (cfg.shard == (0, 1) or merge_only):
        summary["output"] = _assemble(cfg, table, parts, num_chunks)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _assemble(cfg: JobConfig, table, parts: str, num_chunks: int) -> str:
    missing = [k for k in range(num_chunks) if not os.path.exists(_chunk_path(parts, k))]
    if missing:
        raise InputError(
            f"{parts}: {len(missing)} of {num_chunks} chunks are not done yet (first: {missing[0]}); "
            "run the remaining shards, then merge"
        )
    outputs: dict[int, Any] = {}
    for k in range(num_chunks):
        with open(_chunk_path(parts, k), encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                outputs[record["i"]] = record["out"]
    rows = []
    for i, row in enumerate(table.rows):
        if i not in outputs:
            continue  # rejected row (listed in the rejects file)
        out = outputs[i]
        if isinstance(out, list):
            rows.extend({**row, **pair} for pair in out)
        else:
            rows.append({**row, **out})
    write_rows(cfg.output, rows)
    if not cfg.keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return cfg.output


def merge_job(output: str | os.PathLike, *, keep_parts: bool = False) -> dict:
    """Assemble ``output`` from the chunks all shards wrote to ``<output>.parts`` (re-reads the input)."""
    output = os.fspath(output)
    path = os.path.join(parts_dir(output), "manifest.json")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such manifest; nothing to merge for {output}")
    m = json.loads(open(path, encoding="utf-8").read())
    cfg = JobConfig(
        input=m["input_arg"], output=output, spec=TaskSpec(**m["spec"]), model=m["model"], dtype=m["dtype"], backbone_config=m["backbone_config"],
        split=m["split"], limit=m["limit"], chunk_size=m["chunk_size"], on_error=m["on_error"], keep_parts=keep_parts,
    )  # fmt: skip
    return run_job(cfg, merge_only=True)


# ------------------------------------------------------------------------------------------------ library hooks
_MODELS: dict[tuple, Any] = {}


def _device_for_rank(device: str | None, rank: int | None) -> str:
    import torch

    if device is not None:
        return device
    if torch.cuda.is_available():
        return f"cuda:{(rank or 0) % torch.cuda.device_count()}"
    return "cpu"


def _cached_model(model: str, device: str | None, dtype: str | None, batch_size: int, backbone_config: str | None = None):
    # One model per process and device: datasets' num_proc workers, Ray actors and repeated jobs load it once.
    key = (os.path.abspath(model) if os.path.isdir(model) else os.fspath(model), device, dtype, batch_size, backbone_config)
    if key not in _MODELS:
        from .ranker import PairRM

        _MODELS[key] = PairRM.from_pretrained(
            model, device=device, dtype=dtype, batch_size=batch_size, backbone_config=backbone_config
        )
    return _MODELS[key]


def _columns_out(outputs: list[dict], n: int) -> dict[str, list]:
    keys = list(outputs[0]) if outputs else []
    return {key: [o[key] for o in outputs] for key in keys}


class BatchFn:
    """``(batch, rank=None) -> new columns`` for ``Dataset.map(batched=True, with_rank=True)``; picklable.

    The model loads lazily, once per process, on ``device`` or else ``cuda:<rank % GPUs>`` (CPU without CUDA).
    Tasks ``rank``, ``compare`` and ``score`` (one output row per input row); a bad row raises ValueError naming
    its position in the batch and the field.
    """

    def __init__(self, spec: TaskSpec, model: str = DEFAULT_MODEL, *, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 16):  # fmt: skip
        if spec.task == "label":
            raise ValueError("label changes the number of rows; use the pairrm label command or label_preferences")
        self.spec, self.model, self.device, self.dtype, self.batch_size = spec, os.fspath(model), device, dtype, batch_size

    def __call__(self, batch: Mapping[str, Sequence], rank: int | None = None) -> dict[str, list]:
        """New columns for a column-oriented batch."""
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        items = []
        for k in range(n):
            try:
                items.append(prepare_row({c: batch[c][k] for c in columns}, self.spec))
            except RowError as err:
                raise ValueError(f"batch row {k}: {err}") from None
        rm = _cached_model(self.model, _device_for_rank(self.device, rank), self.dtype, self.batch_size)
        outputs, _ = run_task(rm, self.spec, items, list(range(n)))
        return _columns_out(outputs, n)


def batch_fn(task: str = "rank", model: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
             batch_size: int = 16, **spec_kwargs) -> BatchFn:  # fmt: skip
    """A :class:`BatchFn` for ``task`` with :class:`TaskSpec` options (columns, aggregation, …)."""
    return BatchFn(TaskSpec(task=task, **spec_kwargs), model, device=device, dtype=dtype, batch_size=batch_size)


def rank_batch_fn(model: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
                  batch_size: int = 16, **spec_kwargs) -> BatchFn:  # fmt: skip
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
    """

    def __init__(self, model: str = DEFAULT_MODEL, task: str = "rank", *, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 16, **spec_kwargs):  # fmt: skip
        self.fn = batch_fn(task, model, device=device, dtype=dtype, batch_size=batch_size, **spec_kwargs)
        # Ray pins each actor to its GPU(s) through CUDA_VISIBLE_DEVICES, so rank 0 is the right device.
        _cached_model(self.fn.model, _device_for_rank(device, 0), dtype, batch_size)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch with the task's columns added."""
        new = self.fn(batch, 0)
        numpy_batch = any(isinstance(v, np.ndarray) for v in batch.values())
        out = dict(batch)
        for key, values in new.items():
            out[key] = _object_column(values) if numpy_batch and values and isinstance(values[0], list) else (
                np.asarray(values) if numpy_batch else values
            )
        return out

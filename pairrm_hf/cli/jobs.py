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
from dataclasses import dataclass, field
from typing import Any

from ..loading import DEFAULT_MODEL
from ..ranker import shared_pairrm
from .io import (
    InputError,
    RowProblem,
    atomic_write_text,
    input_fingerprint,
    read_table,
    write_rows,
)
from .tasks import RowError, TaskSpec, prepare_row, run_task

__all__ = ["JobConfig", "run_job", "merge_job", "parts_dir"]

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
        more = (
            f" ({len(problems) - 1} more bad rows; --on-error skip writes them to a rejects file)"
            if len(problems) > 1
            else ""
        )
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
    return shared_pairrm(cfg.model, device, cfg.dtype, cfg.batch_size, cfg.backbone_config)


def _write_rejects(cfg: JobConfig, problems: list[RowProblem]) -> str | None:
    path = cfg.output + ".rejects.jsonl"
    if not problems:
        return None
    lines = []
    for p in problems:
        raw = p.raw if isinstance(p.raw, (dict, list, str, int, float, bool)) or p.raw is None else repr(p.raw)
        lines.append(
            json.dumps(
                {"index": p.index, "location": p.location, "reason": p.reason, "row": raw},
                ensure_ascii=False,
                default=repr,
            )
        )
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

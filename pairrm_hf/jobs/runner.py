"""Chunked, resumable, shardable jobs over row tables, and batch hooks for ``datasets.map`` and Ray.

A job reads the whole input once, checks every row (before any forward pass; including what the output's writer
would refuse, see :func:`~pairrm_hf.jobs.io.output_problems`), splits row indices into chunks of
``chunk_size`` and writes each finished chunk atomically to ``<output>.parts/chunk-NNNNNN.jsonl``, next to a
``manifest.json``. A rerun of the same command skips finished chunks, so a job killed at any moment loses and
duplicates nothing. When every chunk is there, the output is assembled in input order and written atomically,
and the parts folder is removed.

Job identity: a hash of the input's content (every byte, hashed from the very bytes the rows were parsed from, see
:func:`~pairrm_hf.jobs.io.read_table`), the
options that change results (task and columns, aggregation, seed, limit, split, chunk size, on-error, dtype,
backbone config, and int8 quantization: the backend that applies it and a digest of the calibration rows' content
with their size), the model's content (config and sampled weights) and the package version. The manifest holds
it, and the first line of every chunk names it: a chunk of any other job is never adopted (it is computed again),
and an unfinished folder of another job is refused unless it finished no chunk yet (a failed start).

Locking (:class:`~pairrm_hf.jobs.locks.JobLock`): processes on the same output cooperate. Each claims a chunk
before computing it and skips chunks another process holds; before assembling it waits for those, computing any
the other process left unfinished. The folder is removed only when no other process works in it.

Sharding: chunk ``k`` belongs to shard ``k % COUNT`` (round-robin, so shards get similar work even when long rows
cluster). Under ``accelerate launch`` (``WORLD_SIZE`` > 1) the chunks of a shard are split the same way between
processes; the main process waits for the others and assembles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..checkpoints.loading import DEFAULT_MODEL
from ..ranking.methods import get_ranking_method
from ..ranking.openvino_backend import engine_device, openvino_available, requested_backend
from ..ranking.openvino_quantization import (
    Calibration,
    as_calibration,
    check_calibration_options,
    checked_calibration,
)
from ..ranking.quantization import check_quantize
from ..ranking.ranker import shared_pairrm
from ..utils.checks import check_positive_int
from ..utils.version import __version__
from .io import (
    InputError,
    RowProblem,
    atomic_write_text,
    check_output_path,
    decode_csv_lists,
    input_fingerprint,
    output_problems,
    read_table,
    write_rows,
)
from .locks import JobLock
from .tasks import RowError, TaskSpec, prepare_row, run_task

__all__ = [
    "JobConfig",
    "run_job",
    "merge_job",
    "parts_dir",
    "job_id",
    "expected_pairs",
    "cpu_backend",
    "resolve_cpu_backend",
    "checked_load_calibration",
    "read_job_calibration",
]

MANIFEST_VERSION = 2
#: Bytes of each weights file hashed for the model's identity: its start, middle and end (weights are GBs;
#: retraining changes every tensor, so samples catch it while a full hash would cost seconds per run).
_MODEL_SAMPLE = 1 << 20


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
    #: ``"torch"``/``None`` or ``"openvino"``; like the device, not part of the job's identity (same logits to ~1e-5).
    backend: str | None = None
    #: ``"fused"``/``"eager"``/``"flex"`` or ``None`` (the model's); not part of the identity either (same logits).
    attention: str | None = None
    packing: bool = False
    #: ``"int8"`` or ``None`` (see :class:`~pairrm_hf.ranking.ranker.PairRM`). It moves logits by ~1e-2, so it is
    #: part of the identity, with the backend that applies it (torch dynamic int8 and OpenVINO int8 differ).
    quantize: str | None = None
    #: with ``quantize="int8"`` on OpenVINO: a JSONL file of calibration rows (static int8); in the identity by a
    #: digest of its rows' content and ``calibration_size``, not by its path.
    calibration: str | None = None
    #: ordered pairs of the calibration rows to calibrate on (``None``: 256).
    calibration_size: int | None = None
    split: str | None = None
    limit: int | None = None
    chunk_size: int = 1000
    on_error: str = "raise"
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    keep_parts: bool = False
    progress: bool = True
    #: seconds between progress lines when stderr is no terminal (a log file, a batch system's output)
    progress_interval: float = 30.0

    def identity(self, table=None, calibration: Calibration | None = None) -> dict:
        """Everything that decides the contents of the chunks (batch size and device do not, beyond float rounding,
        except for torch's dynamic int8: see :meth:`quantization`).

        Resolves the model (a bad ``--model`` fails here, before the job folder exists). ``calibration`` is
        :attr:`calibration` already read (:func:`read_job_calibration`); without it the file is read here.
        """
        if calibration is None:
            calibration = read_job_calibration(self)
        return {
            "version": MANIFEST_VERSION,
            "package": __version__,
            "input": input_fingerprint(self.input, self.split, table),
            "split": self.split,
            "limit": self.limit,
            "chunk_size": self.chunk_size,
            "on_error": self.on_error,
            "model": model_fingerprint(self.model),
            "dtype": self.precision(),
            "backbone_config": _backbone_fingerprint(self.backbone_config),
            "quantize": self.quantization(calibration),
            "spec": self.spec.to_dict(),
        }

    def precision(self) -> str | dict | None:
        """The identity's ``dtype`` entry: the dtype's name (``None``: as loaded), except for bfloat16 computed by
        OpenVINO, which gives other numbers than torch's bf16 weights and, on a CPU without native bf16, computes
        in f32: ``{"dtype": "bfloat16", "backend": "openvino", "computes": "bf16" or "f32"}``."""
        import torch

        from ..ranking.openvino_backend import openvino_inference_precision
        from ..utils.devices import resolve_dtype

        dtype = resolve_dtype(self.dtype)
        if dtype is None:
            return None
        name = str(dtype).replace("torch.", "")
        if dtype != torch.bfloat16 or cpu_backend(self)[0] != "openvino":
            return name
        return {"dtype": name, "backend": "openvino", "computes": openvino_inference_precision("bf16")}

    def quantization(self, calibration: Calibration | None = None) -> dict | None:
        """The identity's ``quantize`` entry: ``None`` for full precision, else the method, the backend that applies
        it and the calibration's content digest and size (``None`` for OpenVINO's weight-only int8); for torch's
        dynamic int8 also the batch size and packing, which change its numbers.

        ``backend="auto"`` is resolved from the options as the engine resolves it for int8 (OpenVINO when it is
        installed with nncf, the weights stay fp32 and no other attention was asked for; torch otherwise), before
        the model loads. A model OpenVINO cannot take at all runs torch in every process alike (its fingerprint is
        in the identity too), so two settings that give other numbers always get other identities.
        """
        if self.quantize is None:
            return None
        backend = cpu_backend(self)[0]
        entry = {
            "method": self.quantize,
            "backend": backend,
            "calibration": None
            if calibration is None
            else {"rows": calibration.fingerprint, "size": calibration.size, **calibration.options()},
        }
        if backend == "torch":
            # torch's dynamic int8 measures activation ranges per forward batch, so which rows share a batch moves
            # scores by up to the int8 error (OpenVINO's int8 does not depend on it: measured to ~1e-6)
            entry["batch_size"] = self.batch_size
            if self.packing:  # packed batches hold other rows (and no padding tokens) than padded ones
                entry["packing"] = True
        return entry

    def arguments(self) -> dict:
        """What ``pairrm merge`` needs to rebuild this job (paths as given)."""
        return {
            "input": self.input,
            "model": self.model,
            "dtype": self.dtype,
            "backbone_config": self.backbone_config,
            "batch_size": self.batch_size,
            "backend": self.backend,
            "attention": self.attention,
            "packing": self.packing,
            "quantize": self.quantize,
            "calibration": self.calibration,
            "calibration_size": self.calibration_size,
            "split": self.split,
            "limit": self.limit,
            "chunk_size": self.chunk_size,
            "on_error": self.on_error,
            "spec": self.spec.to_dict(),
        }


def cpu_backend(cfg: JobConfig) -> tuple[str, str]:
    """``(backend, reason)``: what runs ``cfg``'s int8 or CPU bfloat16 (``"torch"`` or ``"openvino"``), known from
    the options alone (:func:`resolve_cpu_backend` of its backend, device, dtype, attention and quantize)."""
    return resolve_cpu_backend(
        cfg.backend,
        device=cfg.device,
        dtype=cfg.dtype,
        attention=cfg.attention,
        quantize=cfg.quantize,
        packing=cfg.packing,
    )


def resolve_cpu_backend(
    backend: str | None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    attention: str | None = None,
    quantize: str | None = None,
    packing: bool = False,
) -> tuple[str, str]:
    """``(backend, reason)``: what runs int8 or CPU bfloat16 for these options (``"torch"`` or ``"openvino"``),
    without a model.

    An explicit ``backend`` (or ``$PAIRRM_BACKEND``) is taken as it is. ``auto`` follows the rules of
    :func:`~pairrm_hf.ranking.openvino_backend.auto_backend` that need no model: OpenVINO on the CPU (int8 always
    runs there) unless it (or, for int8, nncf) is missing, ``dtype`` is float16, an attention other than the
    default or packing was asked for. The reason names the option as the command spells it (``--dtype float16``).
    """
    import torch

    from ..models.attention import default_attention
    from ..utils.devices import resolve_dtype

    requested = requested_backend(backend)
    if requested != "auto":
        return requested, f"--backend {requested}"
    where = engine_device(device, quantize=quantize, backend=requested)
    if where.type != "cpu":
        return "torch", f"device {where} is not the CPU"
    if resolve_dtype(dtype) not in (None, "auto", torch.float32, torch.bfloat16):
        return "torch", f"--dtype {dtype}"
    if attention not in (None, default_attention("cpu")):
        return "torch", f"--attention {attention}"
    if packing:
        return "torch", "--packing"
    if not openvino_available(quantize):
        return "torch", "openvino (with nncf, for int8) is not installed (pip install 'pairrm-hf[openvino]')"
    return "openvino", "openvino is installed"


def checked_load_calibration(
    calibration: Any,
    calibration_size: int | None = None,
    *,
    quantize: str | None,
    backend: str | None,
    dtype: str | None = None,
    attention: str | None = None,
) -> Calibration | None:
    """``calibration=`` for a caller that loads its model later (``datasets.map`` callables, Ray actors, the demo):
    refused where it cannot apply and read and checked now (:func:`checked_calibration`, errors naming the file, row
    and field), and refused where ``backend="auto"`` would pick torch (:func:`resolve_cpu_backend`), which the
    engine would otherwise only find when it loads, on the first batch. ``None`` when no calibration is given."""
    checked = checked_calibration(calibration, calibration_size, quantize=quantize, backend=backend)
    if checked is not None:
        chosen, reason = resolve_cpu_backend(backend, dtype=dtype, attention=attention, quantize="int8")
        if chosen != "openvino":
            raise ValueError(
                f"calibration= ({checked.text.origin}) calibrates OpenVINO's static int8, but backend='auto' picks "
                f"torch here ({reason}); pass backend='openvino', or drop calibration="
            )
    return checked


def read_job_calibration(cfg: JobConfig) -> Calibration | None:
    """``cfg.calibration`` read and checked (every row, by the input rule) with ``cfg.calibration_size`` applied, or
    ``None``; :class:`InputError` naming the file, row and field. Also refuses a calibration where it cannot apply
    (no ``quantize="int8"``, the torch backend, or ``auto`` picking torch), before anything is loaded."""
    if cfg.calibration is None:
        if cfg.calibration_size is not None:
            raise InputError("--calibration-size needs --calibration (the rows to calibrate static int8 on)")
        return None
    try:
        check_calibration_options(cfg.calibration, quantize=cfg.quantize, backend=requested_backend(cfg.backend))
    except ValueError as err:
        raise InputError(f"--calibration {cfg.calibration}: {err}") from None
    backend, reason = cpu_backend(cfg)
    if backend != "openvino":
        raise InputError(
            f"--calibration {cfg.calibration}: static int8 runs on OpenVINO, but --backend auto picks torch here "
            f"({reason}); fix that, pass --backend openvino, or drop --calibration"
        )
    try:
        return as_calibration(os.fspath(cfg.calibration), cfg.calibration_size)
    except (ValueError, TypeError) as err:  # the message names the file, the row (and line) and the field
        raise InputError(str(err)) from None


def job_id(identity: dict) -> str:
    """The short hash of a job identity that heads every chunk file."""
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=12).hexdigest()


def _sample_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _MODEL_SAMPLE // 2), max(0, size - _MODEL_SAMPLE)}):
            f.seek(offset)
            h.update(f.read(_MODEL_SAMPLE))
    return h.hexdigest()


def model_fingerprint(model: str) -> dict:
    """The model's identity: every byte of its JSON configs, size and sampled bytes of its weights (not its path,
    so a moved or re-downloaded copy resumes)."""
    from ..checkpoints.loading import resolve_checkpoint

    folder = resolve_checkpoint(model)
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith((".safetensors", ".bin")) and name != "training_args.bin":
            files[name] = _sample_hash(path)
        elif name.endswith(".json") or name == "spm.model":
            with open(path, "rb") as f:
                files[name] = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    return files


def _backbone_fingerprint(backbone_config: str | None) -> Any:
    if backbone_config is None:
        return None
    path = os.fspath(backbone_config)
    path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        raise InputError(f"--backbone-config {backbone_config}: no such file or folder with a config.json")
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def parts_dir(output: str | os.PathLike) -> str:
    """The work folder of a job writing ``output``."""
    return os.fspath(output) + ".parts"


def _chunk_path(parts: str, k: int) -> str:
    return os.path.join(parts, f"chunk-{k:06d}.jsonl")


def _chunk_done(parts: str, k: int, job: str) -> bool:
    """Whether chunk ``k`` is finished by this job (its first line names the job; anything else is not adopted)."""
    try:
        with open(_chunk_path(parts, k), encoding="utf-8") as f:
            head = json.loads(f.readline())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and head.get("job") == job and head.get("chunk") == k


def _finished_chunks(parts: str) -> list[str]:
    return sorted(n for n in os.listdir(parts) if n.startswith("chunk-") and n.endswith(".jsonl"))


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_options(cfg: JobConfig) -> None:
    """Options that can be checked without the data or the model: before anything is read, loaded or written."""
    from ..utils.devices import resolve_device, resolve_dtype

    if cfg.on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    if not cfg.progress_interval >= 0:
        raise InputError(f"progress_interval must be a number of seconds >= 0, got {cfg.progress_interval!r}")
    try:
        check_positive_int("chunk_size", cfg.chunk_size)
    except ValueError as err:
        raise InputError(str(err)) from None
    index, count = cfg.shard
    if not (0 <= index < count):
        raise InputError(f"shard must be INDEX/COUNT with 0 <= INDEX < COUNT, got {index}/{count}")
    check_output_path(cfg.output)
    resolve_dtype(cfg.dtype)
    try:
        check_quantize(cfg.quantize, cfg.device)  # before the device: int8 on CUDA is refused even without CUDA
        requested_backend(cfg.backend)
    except ValueError as err:
        raise InputError(str(err)) from None
    if cfg.device is not None:
        resolve_device(cfg.device)


def _check_rows(cfg: JobConfig):
    """Read and check every row; returns (table, prepared items by index, problems)."""
    table = read_table(cfg.input, split=cfg.split, limit=cfg.limit)
    spec = cfg.spec
    # Only CSV cells are text-only; there a list column's JSON text is decoded (JSONL/JSON/Parquet strings stay).
    decode_csv_lists(
        table,
        list_columns=[] if spec.task == "compare" else [spec.candidates_column],
        chat_columns=[c for c in (spec.a_column, spec.b_column, spec.reference_column, spec.prompt_column) if c],
    )
    problems = {p.index: p for p in table.problems}
    items: dict[int, dict] = {}
    for i, row in enumerate(table.rows):
        if i in problems:
            continue
        try:
            items[i] = prepare_row(row, cfg.spec)
        except RowError as err:
            problems[i] = RowProblem(i, table.locations[i], str(err), row)
    # What the output's writer would refuse (found now, not after every row is computed).
    for p in output_problems(cfg.output, table, skip=problems):
        problems[p.index] = p
        items.pop(p.index, None)
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


def _remove_parts(parts: str) -> None:
    """``--overwrite``: remove an unfinished job folder, unless another process is working in it."""
    lock = JobLock(parts)
    try:
        if not lock.exclusive():
            raise InputError(
                f"{parts}: another pairrm process is working on this output right now; wait for it to finish "
                "(or stop it) before --overwrite"
            )
        shutil.rmtree(parts)
    finally:
        lock.close()


def _open_job(cfg: JobConfig, manifest: dict, is_main: bool, state) -> tuple[str, JobLock]:
    """Create or join the job folder and hold its *active* lock; refuses a folder of another job."""
    parts = parts_dir(cfg.output)
    if is_main:
        if cfg.overwrite and os.path.isdir(parts):
            _remove_parts(parts)
        if os.path.exists(cfg.output) and not os.path.isdir(parts) and not cfg.overwrite:
            raise InputError(f"{cfg.output}: already exists; pass --overwrite to compute it again")
        os.makedirs(parts, exist_ok=True)
    if state is not None:
        state.wait_for_everyone()
    lock = JobLock(parts)
    try:
        if not lock.share() or not lock.is_current():
            raise InputError(
                f"{cfg.output}: another pairrm process just finished or removed this job; "
                "rerun to see its result (or pass --overwrite to compute it again)"
            )
        _check_manifest(parts, manifest, lock)
    except BaseException:
        lock.close()
        raise
    return parts, lock


def _read_manifest(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def _create_manifest(path: str, manifest: dict) -> None:
    """Write the manifest only if there is none (two processes starting together agree on one)."""
    tmp = path + f".{os.getpid()}.tmp"
    atomic_write_text(tmp, json.dumps(manifest, indent=1, sort_keys=True), make_dirs=False)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.remove(tmp)


def _check_manifest(parts: str, manifest: dict, lock: JobLock) -> None:
    path = os.path.join(parts, "manifest.json")
    found = _read_manifest(path)
    if found is None:
        _create_manifest(path, manifest)
        found = _read_manifest(path)
    if found.get("job") == manifest["job"]:
        return
    # Another job's folder. If it finished no chunk (a start that failed, e.g. on a bad --dtype or --model) and no
    # process works in it, nothing can be mixed: take it over instead of refusing the corrected command.
    if not _finished_chunks(parts) and lock.exclusive():
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True), make_dirs=False)
        lock.share()  # back to shared: other processes of this job may join
        return
    found = _read_manifest(path) or {}  # a process of this same job may have just taken the folder over
    if found.get("job") == manifest["job"]:
        return
    mine, theirs = manifest["identity"], found.get("identity", {})
    keys = sorted(
        k
        for k in set(mine) | set(theirs)
        if json.dumps(mine.get(k), sort_keys=True) != json.dumps(theirs.get(k), sort_keys=True)
    )
    raise InputError(
        f"{parts}: unfinished job with different {', '.join(keys) or 'format'} (input content, options, model or "
        "package version changed); rerun with the same options and input, or pass --overwrite to start over"
    )


def _my_chunks(num_chunks: int, shard: tuple[int, int], proc: int, nproc: int) -> list[int]:
    index, count = shard
    return [k for k in range(num_chunks) if k % count == index and (k // count) % nproc == proc]


@contextmanager
def _loading_bars(enabled: bool) -> Iterator[None]:
    """transformers' "Loading weights" bar follows the job's progress switch (restored afterwards)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    if enabled or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()  # also turns huggingface_hub's bars back on
        if hub_was_disabled:
            disable_progress_bars()


def _load_model(cfg: JobConfig, state, calibration: Calibration | None):
    device = cfg.device
    if device is None and state is not None:
        device = str(state.device)  # accelerate picks cuda:<local rank> (or cpu with --cpu)
    with _loading_bars(cfg.progress):
        return shared_pairrm(
            cfg.model,
            device,
            cfg.dtype,
            cfg.batch_size,
            cfg.backbone_config,
            backend=cfg.backend,
            attention=cfg.attention,
            quantize=cfg.quantize,
            calibration=calibration,  # read once, at the start: the identity's digest is of these very rows
            packing=cfg.packing,
        )


def _write_rejects(cfg: JobConfig, problems: list[RowProblem]) -> str | None:
    path = cfg.output + ".rejects.jsonl"
    if not problems:
        return None
    lines = []
    for p in problems:
        raw = p.raw if isinstance(p.raw, (dict, list, str, int, float, bool)) or p.raw is None else repr(p.raw)
        record = {"index": p.index, "location": p.location, "reason": p.reason, "row": raw}
        line = json.dumps(record, ensure_ascii=False, default=repr)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a row rejected for a lone surrogate: keep it, \u-escaped
                line = json.dumps(record, default=repr)
        lines.append(line)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def expected_pairs(spec: TaskSpec, item: dict) -> int:
    """Ordered pairs one prepared row moves the progress bar by: the registered ranking method's cost for ``rank``
    and ``label`` (exact for a pairwise model, see :mod:`pairrm_hf.ranking.methods`), 2n for ``score``."""
    if spec.task == "compare":
        return 2 if spec.compare_mode == "symmetric" else 1
    n = len(item["candidates"])
    if spec.task == "score":
        return 2 * n
    return int(get_ranking_method(spec.aggregation).cost(n))


class _ProgressLines:
    """The job's progress where stderr is no terminal (a log file, a batch system): a line every ``interval``
    seconds, where tqdm would print nothing at all. It has the parts of a tqdm bar the job uses."""

    def __init__(self, desc: str, total: int, interval: float):
        self.desc, self.total, self.interval = desc, total, interval
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            elapsed = now - self.start
            rate = self.n / elapsed if elapsed > 0 else 0.0
            left = f", about {(self.total - self.n) / rate:.0f} s left" if rate > 0 and self.total > self.n else ""
            share = 100 * self.n / self.total if self.total else 100.0
            _log(
                f"{self.desc}: {self.n}/{self.total} pairs ({share:.0f}%) in {elapsed:.0f} s, {rate:.1f} pairs/s{left}"
            )

    def refresh(self) -> None:
        """Nothing to redraw (tqdm's interface)."""

    def close(self) -> None:
        """Nothing to close (tqdm's interface); the job prints its summary."""


def _progress_bar(cfg: JobConfig, total: int, position: int):
    """The job's bar over ordered pairs, moved by the engine after every batch. huggingface_hub's tqdm honours
    ``HF_HUB_DISABLE_PROGRESS_BARS`` and ``disable_progress_bars()`` (which transformers' ``disable_progress_bar()``
    calls). Where stderr is no terminal, where tqdm prints nothing, a line every ``cfg.progress_interval`` seconds
    instead (same switches)."""
    from huggingface_hub.utils import are_progress_bars_disabled, tqdm

    desc = f"pairrm {cfg.spec.task}"
    terminal = getattr(sys.stderr, "isatty", lambda: False)()
    if cfg.progress and not terminal and not are_progress_bars_disabled():
        return _ProgressLines(desc, total, cfg.progress_interval)

    return tqdm(
        total=total,
        unit="pair",
        desc=desc,
        position=position,
        disable=None if cfg.progress else True,
    )


def run_job(cfg: JobConfig, *, merge_only: bool = False) -> dict:
    """Run (or resume) a job; returns a summary dict. Raises :class:`InputError` for bad input/options.

    With a shard other than ``(0, 1)`` the job computes its chunks and stops; :func:`merge_job` assembles.
    """
    start = time.perf_counter()
    _check_options(cfg)
    calibration = read_job_calibration(cfg)
    table, items, problems = _check_rows(cfg)
    identity = cfg.identity(table, calibration)
    manifest = {"job": job_id(identity), "identity": identity, "arguments": cfg.arguments()}
    job = manifest["job"]
    # int8 runs on the CPU: without --device, processes under accelerate launch must not be given a GPU each
    state, proc, nproc = _distributed(cfg.device or ("cpu" if cfg.quantize else None))
    is_main = state is None or state.is_main_process
    parts, lock = _open_job(cfg, manifest, is_main, state)
    try:
        n = len(table.rows)
        num_chunks = math.ceil(n / cfg.chunk_size)
        mine = [] if merge_only else _my_chunks(num_chunks, cfg.shard, proc, nproc)
        todo = [k for k in mine if not _chunk_done(parts, k, job)]
        summary = {
            "rows": n,
            "chunks": num_chunks,
            "chunks_done_before": len(mine) - len(todo),
            "chunks_computed": 0,
            "chunks_by_others": 0,
            "rows_computed": 0,
            "pairs": 0,
            "forward_rows": 0,
            "rejected": len(problems),
            "output": None,
            "process": f"{proc}/{nproc}" if state is not None else None,
        }
        if is_main:
            summary["rejects"] = _write_rejects(cfg, problems)
        runner = _ChunkRunner(cfg, table, items, parts, job, state, proc, summary, todo, calibration)
        try:
            waiting = []
            for k in todo:
                if lock.claim(k):
                    summary["chunks_by_others"] += not runner.run_claimed(lock, k)
                else:
                    waiting.append(k)  # another process computes it; take the next free chunk
            for k in waiting:  # before assembling, wait for those, and take over any left unfinished
                lock.claim(k, wait=True)
                summary["chunks_by_others"] += not runner.run_claimed(lock, k)
        finally:
            runner.close()
        if state is not None:
            if not is_main:
                lock.close()  # so the main process may remove the folder after assembling
            state.wait_for_everyone()
        if is_main and (cfg.shard == (0, 1) or merge_only):
            summary["output"] = _assemble(cfg, table, parts, num_chunks, job, lock)
    finally:
        lock.close()
    summary["seconds"] = time.perf_counter() - start
    return summary


class _ChunkRunner:
    """Computes claimed chunks; loads the model and opens the progress bar on the first one."""

    def __init__(self, cfg, table, items, parts, job, state, proc, summary, todo, calibration=None):
        self.cfg, self.table, self.items, self.parts, self.job = cfg, table, items, parts, job
        self.state, self.proc, self.summary, self.todo = state, proc, summary, todo
        self.calibration = calibration
        self.rm = self.bar = None

    def _rows(self, k: int) -> range:
        return range(k * self.cfg.chunk_size, min(len(self.table.rows), (k + 1) * self.cfg.chunk_size))

    def run_claimed(self, lock: JobLock, k: int) -> bool:
        """Compute chunk ``k`` (claimed by us) unless it is done, then let go of the claim; True if computed here."""
        try:
            if _chunk_done(self.parts, k, self.job):  # another process finished it meanwhile
                return False
            self._compute(k)
            return True
        finally:
            lock.release(k)

    def _compute(self, k: int) -> None:
        cfg, summary = self.cfg, self.summary
        if self.rm is None:
            shared = _load_model(cfg, self.state, self.calibration)
            total = sum(
                expected_pairs(cfg.spec, self.items[i]) for c in self.todo for i in self._rows(c) if i in self.items
            )
            self.bar = _progress_bar(cfg, total, self.proc)
            # a view: the process-wide model keeps its options (other jobs and map workers share it)
            self.rm = shared.with_options(progress_callback=self.bar.update)
        indices = [i for i in self._rows(k) if i in self.items]
        outputs, pairs = run_task(self.rm, cfg.spec, [self.items[i] for i in indices], indices)
        summary["pairs"] += pairs
        summary["forward_rows"] += int(self.rm.engine.last_stats.get("rows", 0))
        head = json.dumps({"job": self.job, "chunk": k, "rows": [self._rows(k).start, self._rows(k).stop]})
        text = (
            head
            + "\n"
            + "".join(json.dumps({"i": i, "out": o}, ensure_ascii=False) + "\n" for i, o in zip(indices, outputs))
        )
        # make_dirs=False: never recreate a folder another process removed (a chunk must not outlive its manifest)
        atomic_write_text(_chunk_path(self.parts, k), text, make_dirs=False)
        summary["chunks_computed"] += 1
        summary["rows_computed"] += len(self._rows(k))

    def close(self) -> None:
        if self.bar is not None:
            if self.bar.n != self.bar.total:  # chunks another process did, or a model that scores candidates alone
                self.bar.total = self.bar.n
                self.bar.refresh()
            self.bar.close()


def _assemble(cfg: JobConfig, table, parts: str, num_chunks: int, job: str, lock: JobLock) -> str:
    missing = [k for k in range(num_chunks) if not _chunk_done(parts, k, job)]
    if missing:
        busy = [k for k in missing if not lock.claim(k)]
        for k in missing:
            if k not in busy:
                lock.release(k)
        now = f" ({len(busy)} being computed by another process right now)" if busy else ""
        raise InputError(
            f"{parts}: {len(missing)} of {num_chunks} chunks are not done yet{now} (first: {missing[0]}); "
            "run the remaining shards, then merge"
        )
    outputs: dict[int, Any] = {}
    for k in range(num_chunks):
        with open(_chunk_path(parts, k), encoding="utf-8") as f:
            head = json.loads(f.readline())
            if head.get("job") != job:  # checked above; a chunk replaced since then is still never adopted
                raise InputError(f"{_chunk_path(parts, k)}: belongs to another job; rerun the same command")
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
    # Remove the folder only when no other process works in it; the last one to finish cleans up.
    if not cfg.keep_parts and lock.exclusive():
        shutil.rmtree(parts, ignore_errors=True)
    return cfg.output


def merge_job(output: str | os.PathLike, *, keep_parts: bool = False) -> dict:
    """Assemble ``output`` from the chunks all shards wrote to ``<output>.parts`` (re-reads the input)."""
    output = os.fspath(output)
    path = os.path.join(parts_dir(output), "manifest.json")
    m = _read_manifest(path)
    if m is None:
        raise InputError(f"{path}: no such manifest; nothing to merge for {output}")
    if "arguments" not in m:
        raise InputError(f"{path}: written by another version of pairrm-hf; rerun the shards with this version")
    a = m["arguments"]
    cfg = JobConfig(
        input=a["input"],
        output=output,
        spec=TaskSpec(**a["spec"]),
        model=a["model"],
        dtype=a["dtype"],
        backbone_config=a["backbone_config"],
        # older manifests have no such arguments (nor quantization)
        batch_size=a.get("batch_size", 16),
        backend=a.get("backend"),
        attention=a.get("attention"),
        quantize=a.get("quantize"),
        calibration=a.get("calibration"),
        calibration_size=a.get("calibration_size"),
        split=a["split"],
        limit=a["limit"],
        chunk_size=a["chunk_size"],
        on_error=a["on_error"],
        keep_parts=keep_parts,
    )
    return run_job(cfg, merge_only=True)

"""Throughput of PairRM operations: every backend of pairrm-hf against upstream's schedule, side by side in one run.

Run from the repository root::

    python -m benchmarks.bench_rank --shapes tiny --workloads short mixed --n 2 6 --inputs 8 --json out.json
    python -m benchmarks.bench_rank --side-by-side --shapes base --workloads short mixed long --n 6 --inputs 4 \
        --repeats 3 --threads 2 --max-seconds 3600 --json benchmarks/results/speed3_rank_base.json
    python -m benchmarks.bench_rank --shapes base --workloads mixed --configs 3x4 8x6 \
        --variants baseline blender engine --repeats 5      # Blender.rank against the original schedule

The variants of one configuration run interleaved, round by round (A B C … A B C …), and each reports the median
of its rounds, so a load change on a shared machine hits all of them alike. Per variant it prints pairs/s, the
speed-up over the baseline (upstream's schedule, fp32 eager) and over ``engine`` (our torch default), max |Δ logit|
and decision flips against the fp32 baseline, peak RSS (or GPU memory), achieved model FLOP/s as a fraction of the
matmul rate probed in the same run, and the setup (conversion, quantization) and warm-up (first call, compile)
seconds apart from the steady-state time. A variant that cannot run here is reported as ``unavailable (reason)``.
See benchmarks/README.md for the FLOP formula.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from benchmarks.baseline import baseline_pair_logits
from benchmarks.workloads import SHAPES, WORKLOADS, build_model, build_tokenizer, make_inputs, nonembedding_params
from pairrm_hf import Blender, PairRM
from pairrm_hf.ranking.aggregation import scores_from_matrix
from pairrm_hf.ranking.openvino_backend import openvino_available, restore_backbone_weights

VARIANTS = (
    "baseline",
    "blender",
    "engine",
    "engine+eager",
    "engine+flex",
    "engine+export",
    "engine+packing",
    "engine+flex+packing",
    "engine+bf16",
    "engine+compile",
    "engine+compile+bf16",
    "engine+fp16",
    "engine+int8",
    "openvino",
    "openvino+int8",
    "openvino+bf16",
    "openvino+int8+bf16",
)
#: ``--side-by-side``: every backend, in this order (on a GPU the bf16/fp16 rows join; CPU-only ones say why not).
SIDE_BY_SIDE = (
    "baseline",
    "blender",
    "engine+eager",
    "engine",
    "engine+flex",
    "engine+export",
    "engine+int8",
    "openvino",
    "openvino+int8",
    "openvino+bf16",
    "openvino+int8+bf16",
)
OPS = ("rank", "compare", "rank_with_ref")


class PeakRSS:
    """This process's peak resident memory while the block runs; ``peak`` is the max since ``start`` (the RSS on entry).

    On Linux the kernel's own high-water mark is reset on entry (``/proc/self/clear_refs``) and read on exit
    (``VmHWM``), so a peak between two samples is not missed; elsewhere the RSS sampled every few ms is the peak.
    ``peak_anon`` is the max of the sampled anonymous part alone (``RssAnon``; ``0`` where not available): RSS less
    file-backed pages such as a memory-mapped model file, which the kernel can drop and read back under pressure.
    A nested block resets the mark for the enclosing one, which then keeps at least its sampled peak.
    """

    def __init__(self):
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:  # fall back to /proc (Linux) — resource.getrusage only gives the lifetime max
            self._proc = None
        self.peak = self.start = self.peak_anon = 0

    def _rss(self) -> int:
        if self._proc is not None:
            return self._proc.memory_info().rss
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def _status(field: str) -> int:
        """A ``kB`` field of ``/proc/self/status`` in bytes (``0`` where not available)."""
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @classmethod
    def _anon(cls) -> int:
        return cls._status("RssAnon")

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        self.peak = max(self.peak, self._rss())
        self.peak_anon = max(self.peak_anon, self._anon())

    def __enter__(self):
        self._exact = self._reset_high_water_mark()
        self.peak = self.start = self._rss()
        self.peak_anon = self._anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.005):
            self._sample()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._exact:
            self.peak = max(self.peak, self._status("VmHWM"))


def gemm_rate(dtype: torch.dtype, device: torch.device, size: int = 1024, seconds: float = 0.5) -> float:
    """Measured FLOP/s of a square matmul in ``dtype`` (the machine's practical peak for the model's main op)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start)


def model_flops(model, row_lengths: np.ndarray) -> float:
    """Useful forward FLOPs for rows of the given real lengths (formula in benchmarks/README.md)."""
    cfg = model.config
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    span = cfg.position_buckets if cfg.position_buckets > 0 else cfg.max_position_embeddings
    lengths = row_lengths.astype(np.float64)
    dense = 2.0 * nonembedding_params(model) * lengths.sum()
    # QKᵀ and A·V: 2·L²·h each; c2p and p2c scores: 2·L·(2·span)·h each, per layer.
    attention = layers * (4.0 * h * (lengths**2).sum() + 8.0 * h * span * lengths.sum())
    return dense + attention


def schedule_for(op: str, n: int) -> tuple[list[tuple[int, int]], int]:
    """Upstream's ordered pairs for an op over ``n`` candidates (+1 reference slot for rank_with_ref)."""
    if op == "rank":
        return [(i, j) for i in range(n) for j in range(n) if i != j], n
    if op == "compare":
        return [(0, 1), (1, 0)], 2
    return [p for j in range(n) for p in ((j, n), (n, j))], n


def run_baseline(rm: PairRM, op: str, prompts, cands, batch_size: int):
    """Outputs of ``op`` computed with upstream's schedule (fp32, same rows, same model)."""
    n = len(cands[0])
    schedule, _ = schedule_for(op, n)
    if op == "rank_with_ref":
        cands = [[*c, max(c, key=len)] for c in cands]
    examples = rm.engine.encode(prompts, cands)
    # the variants share one model: an OpenVINO variant's engine may have released its torch backbone weights
    restore_backbone_weights(rm.engine.model.pretrained_model)
    logits, stats = baseline_pair_logits(rm.engine.model, rm.engine.encoder, examples, schedule, batch_size)
    if op == "rank":
        mats = np.zeros((len(prompts), n, n), dtype=np.float32)
        for k, (i, j) in enumerate(schedule):
            mats[:, i, j] = logits[:, k]
        out = mats
    else:
        out = (logits[:, 0::2] - logits[:, 1::2]).astype(np.float32)
    return out, stats


def run_engine(rm: PairRM, op: str, prompts, cands):
    """Outputs of ``op`` through the public :class:`PairRM` API (one engine call each)."""
    if op == "rank":
        out = np.stack(rm.comparison_matrices(prompts, cands))
    elif op == "compare":
        out = rm.compare(prompts, [c[0] for c in cands], [c[1] for c in cands])[:, None]
    else:
        out = np.stack(rm.rank_with_ref(prompts, cands)).astype(np.float32)
    return out, dict(rm.engine.last_stats)


def decision_flips(op: str, out: np.ndarray, ref: np.ndarray) -> int:
    """Comparisons whose symmetric decision differs from the fp32 baseline (rank: per unordered pair)."""
    if op == "rank":
        s, r = out - out.transpose(0, 2, 1), ref - ref.transpose(0, 2, 1)
        iu = np.triu_indices(out.shape[1], k=1)
        return int((np.sign(s[:, iu[0], iu[1]]) != np.sign(r[:, iu[0], iu[1]])).sum())
    return int((np.sign(out) != np.sign(ref)).sum())


def score_order_flips(scores: np.ndarray, ref: np.ndarray) -> int:
    """Candidate pairs (per input) whose order by score differs from the reference scores' order."""
    iu = np.triu_indices(scores.shape[1], k=1)
    s = np.sign(scores[:, iu[0]] - scores[:, iu[1]])
    r = np.sign(ref[:, iu[0]] - ref[:, iu[1]])
    return int((s != r).sum())


# ------------------------------------------------------------------------------------------------ variants
@dataclasses.dataclass
class Runner:
    """One variant, built and warmed up; ``attention`` is forced around each call (see :func:`call_variant`)."""

    name: str
    ranker: PairRM | Blender
    attention: str | None
    setup_s: float
    warmup_s: float | None = None
    attention_in_use: str | None = None


def unavailable_reason(variant: str, op: str, device: torch.device) -> str | None:
    """Why ``variant`` cannot run ``op`` on ``device`` here, found before building anything; ``None`` if it can."""
    if variant == "blender" and op != "rank":
        return "Blender.rank measures the rank op only"
    if variant == "engine+fp16" and device.type != "cuda":
        return "fp16 weights run on a GPU only"
    if (variant == "engine+int8" or variant.startswith("openvino")) and device.type != "cpu":
        return "CPU only"
    if variant.startswith("openvino") and not openvino_available():
        return "openvino is not installed (pip install 'pairrm-hf[openvino]')"
    if variant.startswith("openvino+int8"):
        try:
            import nncf  # noqa: F401
        except ImportError:
            return "nncf is not installed (pip install 'pairrm-hf[openvino]')"
    return None


def make_variant(
    model, tokenizer, variant: str, device, batch_size: int, blender_folder: str | None = None, calibration=None
):
    """``(ranker, attention)`` for a variant: a :class:`PairRM` (or, for ``blender``, a :class:`Blender` loaded the
    default way from ``blender_folder``) and the attention each call must run with (``None``: not forced).
    ``calibration``: the rows ``openvino+int8-static`` calibrates on (``PairRM(calibration=...)``)."""
    if variant == "blender":  # the default path a user gets: loadranker on the saved checkpoint, no options
        blender = Blender()
        blender.loadranker(blender_folder, device=str(device))
        return blender, None
    if variant == "baseline":  # baseline_pair_logits switches to eager attention itself
        return PairRM(model, tokenizer, device=device, batch_size=batch_size, backend="torch"), None
    if variant.startswith("openvino"):  # converted once per model and cached (PAIRRM_OPENVINO_CACHE)
        quantize = "int8" if "int8" in variant else None
        static = {"calibration": calibration} if variant.startswith("openvino+int8-static") else {}
        if static and calibration is None:
            raise ValueError("openvino+int8-static needs calibration rows (bench_int8 draws them)")
        # "+bf16": dtype="bfloat16" on the CPU, OpenVINO computing in bf16 from the fp32 (or int8) model
        static.update({"dtype": torch.bfloat16} if variant.endswith("+bf16") else {})
        rm = PairRM(
            model, tokenizer, device=device, batch_size=batch_size, backend="openvino", quantize=quantize, **static
        )
        return rm, None
    # "engine+eager" keeps transformers' attention module: it separates the schedule's gain from the attention's.
    attention = next((a for a in ("eager", "flex", "export") if a in variant), "fused")
    # backend="torch": the default ("auto") would run a fp32 CPU variant on OpenVINO when it is installed
    kwargs = {"device": device, "batch_size": batch_size, "attention": attention, "backend": "torch"}
    if "bf16" in variant:
        kwargs["autocast_dtype"] = torch.bfloat16
    if "fp16" in variant:
        kwargs["dtype"] = torch.float16
    if "compile" in variant:
        kwargs["compile"] = True
    if "int8" in variant:
        kwargs["quantize"] = "int8"
    if "packing" in variant:
        kwargs["packing"] = True
    if "fp16" in variant:  # cast a copy: the fp32 model stays the reference of the other variants
        import copy

        model = copy.deepcopy(model)
    return PairRM(model, tokenizer, **kwargs), attention


def call_variant(runner: Runner, op: str, prompts, cands, batch_size: int):
    """``(output, stats)`` of one call; stats is ``None`` for ``blender`` (its view's counters are not reachable)."""
    if runner.name == "baseline":
        return run_baseline(runner.ranker, op, prompts, cands, batch_size)
    if runner.name == "blender":
        scores = runner.ranker.rank(prompts, cands, batch_size=batch_size, return_scores=True, disable_tqdm=True)
        return np.asarray(scores, dtype=np.float32), None
    model = runner.ranker.engine.model  # not .model: that reads an OpenVINO engine's released torch weights back
    # Variants share one model and attention is a setting of its modules, so each call sets its own.
    forced = model.use_attention(runner.attention) if runner.attention else contextlib.nullcontext()
    with forced:
        out = run_engine(runner.ranker, op, prompts, cands)
        runner.attention_in_use = getattr(model, "attention_implementation", None)
    return out


def _real_row_lengths(rm: PairRM, op: str, prompts, cands) -> np.ndarray:
    n = len(cands[0])
    schedule, _ = schedule_for(op, n)
    if op == "rank_with_ref":
        cands = [[*c, max(c, key=len)] for c in cands]
    examples = rm.engine.encode(prompts, cands)
    pairs = np.array([(ex, i, j) for ex in range(len(prompts)) for i, j in schedule], dtype=np.int64)
    return rm.engine._row_lengths(examples, pairs)


# ------------------------------------------------------------------------------------------------ one configuration
class Budget:
    """The ``--max-seconds`` wall-clock budget of the whole run (``None``: unlimited)."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.perf_counter() + seconds

    @property
    def spent(self) -> bool:
        """Whether the budget has run out (checked before each setup and each timed call)."""
        return self.deadline is not None and time.perf_counter() > self.deadline


def bench_config(
    model, tokenizer, args, config: dict, device, gemm, budget: Budget, blender_folder=None, texts=None
) -> list[dict]:
    """Rows of one (shape, workload, inputs, n, op): every variant of ``args.variants``, interleaved in rounds.

    ``args`` needs ``variants``, ``batch_size``, ``repeats`` and ``seed``; ``texts`` (prompts, candidate lists)
    replaces the synthetic workload (e.g. the trained ranker's inputs of ``bench_int8``).
    """
    op = config["op"]
    if texts is None:
        texts = make_inputs(tokenizer, config["workload"], config["inputs"], config["n"], seed=args.seed)
    prompts, cands = texts
    # backend="torch": the probe only counts tokens; "auto" would convert the model to OpenVINO for nothing
    probe = PairRM(model, tokenizer, device=device, batch_size=args.batch_size, backend="torch")
    lengths = _real_row_lengths(probe, op, prompts, cands)
    flops = model_flops(model, lengths)  # the fp32 model's useful work, the same for every variant
    pairs = len(prompts) * len(schedule_for(op, config["n"])[0])
    base_row = {**config, "pairs": pairs, "mean_row_tokens": float(lengths.mean())}
    rows: dict[str, dict] = {}
    runners: dict[str, Runner] = {}
    for variant in args.variants:
        row = rows[variant] = {**base_row, "variant": variant, "available": False}
        reason = unavailable_reason(variant, op, device)
        if reason is None and budget.spent:
            reason = "skipped: --max-seconds budget spent"
        if reason is not None:
            row["reason"] = reason
            continue
        try:
            start = time.perf_counter()
            calibration = getattr(args, "calibration", None)  # bench_int8's calibration rows, for the static variant
            ranker, attention = make_variant(
                model, tokenizer, variant, device, args.batch_size, blender_folder, calibration
            )
            runner = Runner(variant, ranker, attention, setup_s=time.perf_counter() - start)
            # untimed warm-up: first-call allocations, OpenVINO shape inference; compile variants compile every
            # shape of the timed call here, so the timed rounds are steady state
            warm = slice(None) if "compile" in variant else slice(0, 1)
            start = time.perf_counter()
            call_variant(runner, op, prompts[warm], cands[warm], args.batch_size)
            _sync(device)
            runner.warmup_s = time.perf_counter() - start
        except Exception as err:  # e.g. attention="flex" before it exists: report it and go on
            row["reason"] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            continue
        runners[variant] = runner
    times: dict[str, list[float]] = {v: [] for v in runners}
    outs, stats, peaks, growth, gpu_peaks = {}, {}, {}, {}, {}
    for _ in range(args.repeats):
        for variant, runner in runners.items():
            if budget.spent:
                break
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with PeakRSS() as mem:
                start = time.perf_counter()
                out, call_stats = call_variant(runner, op, prompts, cands, args.batch_size)
                _sync(device)
                times[variant].append(time.perf_counter() - start)
            outs.setdefault(variant, out)
            stats.setdefault(variant, call_stats)
            peaks[variant] = max(peaks.get(variant, 0), mem.peak)
            growth[variant] = max(growth.get(variant, 0), mem.peak - mem.start)
            if device.type == "cuda":
                gpu_peaks[variant] = max(gpu_peaks.get(variant, 0), torch.cuda.max_memory_allocated())
    # max|Δ| and flips are against the baseline, or against the first variant that ran when the baseline did not
    ref_name = "baseline" if "baseline" in outs else next((v for v in outs if v != "blender"), None)
    reference = outs.get(ref_name)
    for variant, runner in runners.items():
        row = rows[variant]
        row.update(available=True, setup_s=runner.setup_s, warmup_s=runner.warmup_s, rounds=len(times[variant]))
        if runner.attention_in_use is not None:
            row["attention_in_use"] = runner.attention_in_use
            if runner.attention and runner.attention_in_use != runner.attention:
                row["note"] = f"asked for attention={runner.attention!r}, ran {runner.attention_in_use!r}"
        if not times[variant]:
            row.update(available=False, reason="skipped: --max-seconds budget spent before its first round")
            continue
        seconds = statistics.median(times[variant])
        call_stats = stats[variant] or {"rows": pairs, "real_tokens": int(lengths.sum()), "padded_tokens": None}
        peak_rate = gemm["bf16"] if ("bf16" in variant or "fp16" in variant) else gemm["fp32"]
        if "int8" in variant:
            peak_rate = float("nan")  # int8 products have their own peak; the fp32 one would flatter them
        padded = call_stats.get("padded_tokens")
        row.update(
            seconds=seconds,
            times=times[variant],
            pairs_per_s=pairs / seconds,
            rows=call_stats["rows"],
            tokens_per_s=call_stats["real_tokens"] / seconds,
            padding_fraction=(1 - call_stats["real_tokens"] / padded) if padded else None,
            max_batch_rows=call_stats.get("max_batch_rows"),
            peak_rss_mb=peaks[variant] / 2**20,
            rss_growth_mb=growth[variant] / 2**20,
            peak_gpu_mb=gpu_peaks[variant] / 2**20 if variant in gpu_peaks else None,
            model_flops=flops,
            flops_per_s=flops / seconds,
            fraction_of_gemm_peak=flops / seconds / peak_rate,
            reference=ref_name,
        )
        out = outs[variant]
        if variant == "blender":  # scores, not logits: compare with the reference's max_logits scores
            if reference is not None and op == "rank":
                ref_scores = np.stack([scores_from_matrix(m) for m in reference])
                row["max_abs_diff_vs_baseline"] = float(np.abs(out - ref_scores).max())
                row["decision_flips_vs_baseline"] = score_order_flips(out, ref_scores)
                row["compared"] = "max_logits scores; flips = candidate pairs ordered differently"
        elif reference is not None:
            row["max_abs_diff_vs_baseline"] = float(np.abs(out - reference).max())
            row["decision_flips_vs_baseline"] = decision_flips(op, out, reference)
    for key, name in (("speedup_vs_baseline", "baseline"), ("speedup_vs_engine", "engine")):
        ref_seconds = rows.get(name, {}).get("seconds")
        for row in rows.values():
            row[key] = ref_seconds / row["seconds"] if ref_seconds and "seconds" in row else None
    del runners
    gc.collect()
    return list(rows.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ output
def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and value is not None else "-"


def print_table(rows: list[dict]) -> None:
    """One line per row; unavailable variants say why."""
    head = (
        f"{'shape':5} {'work':5} {'in':>3} {'n':>3} {'op':5} {'variant':15} {'pairs/s':>9} {'×base':>6} "
        f"{'×eng':>6} {'max|Δ|':>8} {'flips':>5} {'RSS MB':>7} {'+MB':>6} {'%peak':>6} {'setup s':>7} {'warm s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        lead = f"{r['shape']:5} {r['workload']:5} {r['inputs']:>3} {r['n']:>3} {r['op'][:5]:5} {r['variant']:15}"
        if not r.get("available"):
            print(f"{lead} unavailable ({r.get('reason', '?')})")
            continue
        print(
            f"{lead} {r['pairs_per_s']:9.2f} {_num(r['speedup_vs_baseline'], '6.2f'):>6} "
            f"{_num(r['speedup_vs_engine'], '6.2f'):>6} {_num(r.get('max_abs_diff_vs_baseline'), '8.1e'):>8} "
            f"{r.get('decision_flips_vs_baseline', '-')!s:>5} {r['peak_rss_mb']:7.0f} {r['rss_growth_mb']:6.0f} "
            f"{_num(100 * r['fraction_of_gemm_peak'], '6.1f'):>6} {r['setup_s']:7.1f} {_num(r['warmup_s'], '7.1f'):>7}"
            + (f"  [{r['note']}]" if r.get("note") else "")
        )


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` atomically (a temporary file renamed over ``path``): a killed run leaves the last whole file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def _configs(args) -> list[tuple[int, int]]:
    if args.configs:
        return [tuple(int(x) for x in spec.lower().split("x")) for spec in args.configs]
    return [(args.inputs, n) for n in args.n]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of :func:`main`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["tiny"], choices=list(SHAPES))
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--n", nargs="+", type=int, default=[2, 6, 16])
    p.add_argument("--configs", nargs="+", default=None, help="INPUTSxN pairs (e.g. 3x4 8x6); replace --inputs/--n")
    p.add_argument("--ops", nargs="+", default=["rank"], choices=list(OPS))
    p.add_argument("--variants", nargs="+", default=["baseline", "engine", "engine+bf16"], choices=list(VARIANTS))
    p.add_argument("--side-by-side", action="store_true", help=f"run every backend: {' '.join(SIDE_BY_SIDE)}")
    p.add_argument("--inputs", type=int, default=8, help="prompts per configuration")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward (baseline: inputs per forward)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds per configuration (median reported)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop cleanly after this long, writing the rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="write all results here (rewritten after each configuration)")
    p.add_argument("--llm-blender-python", default=None, help="not implemented; see benchmarks/README.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, build models, run every selected configuration, print and save results."""
    args = parse_args(argv)
    budget = Budget(args.max_seconds)
    if args.llm_blender_python:
        print(
            "--llm-blender-python: the subprocess comparison with the original package is not implemented; "
            "see benchmarks/README.md",
            file=sys.stderr,
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.side_by_side:
        extra = ["engine+bf16", "engine+fp16"] if device.type == "cuda" else []
        args.variants = [*SIDE_BY_SIDE[:4], *extra, *SIDE_BY_SIDE[4:]]
    # bf16 GEMM is measured only when a half-precision variant runs: CPUs without native bf16 take seconds per call.
    half = any("bf16" in v or "fp16" in v for v in args.variants)
    gemm = {
        "fp32": gemm_rate(torch.float32, device),
        "bf16": gemm_rate(torch.bfloat16, device) if half else float("nan"),
    }
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    print(json.dumps(machine))
    tokenizer = build_tokenizer()
    rows: list[dict] = []
    complete = True

    def save() -> None:
        if args.json:
            machine["gemm_gflops"] = {k: v / 1e9 for k, v in gemm.items()}
            payload = {"machine": machine, "args": vars(args), "complete": complete, "results": rows}
            write_json(args.json, payload)

    for shape in args.shapes:
        if budget.spent:
            complete = False
            break
        model = build_model(shape, tokenizer)
        blender_folder = None
        if "blender" in args.variants and "rank" in args.ops:
            blender_folder = tempfile.mkdtemp(prefix=f"pairrm_bench_{shape}_")
            model.save_pretrained(blender_folder)
            tokenizer.save_pretrained(blender_folder)
        for workload in args.workloads:
            for op in args.ops:
                for inputs, n in _configs(args) if op != "compare" else [(_configs(args)[0][0], 2)]:
                    if budget.spent:
                        complete = False
                        break
                    # Re-probe the matmul rate next to each configuration (the best of the run so far): on a shared
                    # or throttling machine a single probe at the start says little about the minutes that follow.
                    gemm["fp32"] = max(gemm["fp32"], gemm_rate(torch.float32, device))
                    if half:
                        gemm["bf16"] = max(gemm["bf16"], gemm_rate(torch.bfloat16, device))
                    config = {"shape": shape, "workload": workload, "inputs": inputs, "n": n, "op": op}
                    config_rows = bench_config(model, tokenizer, args, config, device, gemm, budget, blender_folder)
                    for r in config_rows:
                        r["gemm_gflops"] = {k: v / 1e9 for k, v in gemm.items()}
                    rows += config_rows
                    print_table(config_rows)
                    sys.stdout.flush()
                    save()
        del model
        gc.collect()
        if blender_folder:  # a saved base/large checkpoint is 0.7–1.7 GB
            shutil.rmtree(blender_folder, ignore_errors=True)
    complete = complete and not budget.spent
    print()
    print_table(rows)
    if not complete:
        print(f"stopped early: --max-seconds {args.max_seconds} spent; the rows above are what was measured")
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

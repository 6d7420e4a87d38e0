"""One-shot GPU check of pairrm-hf: precision of the fused and flex attention, speed, memory and flashdeberta.

On a CUDA machine it runs, in at most 8 minutes (about 3–5 on an H200 with the defaults; a wall-clock guard,
``--max-seconds``, default 450, skips what is left with a note and still writes the JSON):

1. **precision** — the fused, flex (``attention="flex"``, FlexAttention) and transformers' eager attention in fp32,
   bf16 and fp16 weights on the ``tiny`` and ``large`` (PairRM, deberta-v3-large shape, random weights) models;
   max |Δ logit| and symmetric decision flips against fp32 eager, over every ordered pair of the ``mixed``
   benchmark inputs;
2. **speed** — pairs/s on the large shape for the ``short``, ``mixed`` and ``long`` workloads with the engine
   (fp32 and bf16; fused, flex and eager attention) and with the original schedule (``benchmarks/baseline.py``,
   fp32 eager, as upstream ran), with the speed-up over both the original schedule and the fused engine of the
   same dtype; model FLOP/s on rows of 1024 tokens against the bf16 matmul rate measured on the same GPU;
3. **memory** — peak GPU memory (``torch.cuda.max_memory_allocated``) of a full ranking for n = 4 and n = 16, and
   at L = 2048 (the ``long`` workload, batches of 8 rows) for fused, flex and eager attention;
4. **packing** — ``PairRM(packing=...)`` off and on, with the fused and the flex attention: pairs/s, the padding
   each way, and max |Δ| against the unpacked run;
5. **flashdeberta** (optional) — the ``flashdeberta`` Triton kernel swapped in for every self-attention module:
   whether it matches fp32 eager to tolerance, and its pairs/s.

A variant that cannot run here (``attention="flex"`` before it exists, or when it fails) is a row with
``ok: false`` and an ``unavailable`` reason; the other rows go on. On a machine without CUDA it runs the parts that
make sense on CPU (precision on the tiny shape, a tiny-shape smoke run of the speed and memory code) and lists what
it skipped. It prints tables and writes JSON.

**Running it on a GPU machine that reaches no package registry.** The machine needs torch (CUDA) and, for part 4,
triton; everything else it lacks travels as wheels. Here, in the repository root (``/.whl/`` is git-ignored)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 flashdeberta==0.0.8

(transformers 5.24 needs huggingface-hub ≥ 1.31, tokenizers 0.23, safetensors ≥ 0.8, sentencepiece, regex,
typer, einops for flashdeberta: add any the machine lacks, e.g. ``tokenizers==0.23.2 sentencepiece==0.2.1``,
with ``--platform manylinux_2_17_x86_64``). Then, with ``.whl`` carried, one command (ends in ~5 minutes)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 \\
        timeout 540 python3 -m benchmarks.gpu_check --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

The package itself is imported from the working tree (``$PWD``). ``--quick`` halves every workload.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np
import torch

from benchmarks.bench_rank import PeakRSS, gemm_rate, model_flops, run_baseline
from benchmarks.workloads import build_model, build_tokenizer, make_inputs, single_token_words
from pairrm_hf import PairRM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: attention implementations of ``PairRM(attention=...)`` every part tries; flex may be missing (an "unavailable" row)
ATTENTIONS = ("eager", "fused", "flex")


class Guard:
    """The wall-clock guard: past ``seconds`` the parts left are skipped with a note (the JSON is still written)."""

    def __init__(self, seconds: float | None):
        self.start = time.perf_counter()
        self.seconds = seconds
        self.skipped: list[str] = []

    def over(self, what: str) -> bool:
        """True (and ``what`` noted as skipped) when the budget is spent."""
        if self.seconds is not None and time.perf_counter() - self.start > self.seconds:
            self.skipped.append(f"{what}: skipped, past the {self.seconds:.0f} s wall-clock guard")
            print(f"guard: {self.skipped[-1]}", flush=True)
            return True
        return False


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _symmetric_flips(out: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    """(flipped, total) symmetric decisions ``sign(C[i,j] − C[j,i])`` over stacked ``[inputs, n, n]`` matrices."""
    iu = np.triu_indices(out.shape[1], k=1)
    s, r = (m - m.transpose(0, 2, 1) for m in (out, ref))
    s, r = s[:, iu[0], iu[1]], r[:, iu[0], iu[1]]
    return int((np.sign(s) != np.sign(r)).sum()), int(r.size)


def _matrices(rm: PairRM, prompts, cands) -> np.ndarray:
    return np.stack(rm.comparison_matrices(prompts, cands))


def _ranker(model, tokenizer, device, attention, batch_size: int, row: dict) -> PairRM | None:
    """``PairRM`` with this attention, or ``None`` with ``row`` marked unavailable (e.g. ``attention="flex"`` before
    it exists): a variant that cannot be built here is a reason in the table, not a crash."""
    try:
        return PairRM(model, tokenizer, device=device, attention=attention, batch_size=batch_size)
    except (ValueError, ImportError, NotImplementedError, RuntimeError) as err:
        row.update(ok=False, unavailable=f"{type(err).__name__}: {err}".splitlines()[0][:200])
        return None


def _attention_in_use(rm: PairRM, row: dict, asked: str | None) -> None:
    """Record what the model ran (flex may fall back to fused when it cannot compile)."""
    used = getattr(rm.model, "attention_implementation", None)
    if used is not None:
        row["attention_in_use"] = used
        if asked and used != asked:
            row["note"] = f"asked for attention={asked!r}, ran {used!r}"


def _with_dtype(model, dtype: torch.dtype):
    """``model`` itself for fp32, else a cast copy (the fp32 model stays the reference)."""
    return model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)


def cuda_matmul_rate(dtype: torch.dtype, device: torch.device, size: int = 8192, reps: int = 20) -> float:
    """FLOP/s of a square matmul on the GPU: a fixed number of products between synchronisations (a time-bounded
    loop would queue thousands of asynchronous launches before the first one finished)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * size**3 * reps / (time.perf_counter() - start)


def flashdeberta_available() -> tuple[bool, str]:
    """Whether ``flashdeberta`` imports here (it needs triton and a CUDA device to run)."""
    try:
        import flashdeberta  # noqa: F401
    except Exception as err:  # ImportError, or triton failing to find a GPU
        return False, f"{type(err).__name__}: {err}"
    return True, "ok"


def use_flashdeberta(model) -> int:
    """Re-class every self-attention module of ``model`` as flashdeberta's kernel (same parameters); returns count.

    ``FlashDisentangledSelfAttention`` subclasses transformers' ``DisentangledSelfAttention`` with the same forward
    signature, so only the class changes. Use a copy: ``model.use_attention(...)`` would swap the modules back.
    """
    from flashdeberta import FlashDisentangledSelfAttention
    from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

    count = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, DisentangledSelfAttention):
                flash = FlashDisentangledSelfAttention.__new__(FlashDisentangledSelfAttention)
                flash.__dict__.update(child.__dict__)
                setattr(module, name, flash)
                count += 1
    return count


def fixed_length_inputs(tokenizer, row_tokens: int, inputs: int, seed: int = 0):
    """Prompts and candidate pairs whose packed rows are about ``row_tokens`` long (no truncation)."""
    words = np.array(single_token_words(tokenizer))
    rng = np.random.default_rng(seed)
    answer = (row_tokens - 6) // 4  # prompt ≈ half the row, two answers of a quarter each

    def text(k: int) -> str:
        return " ".join(rng.choice(words, size=int(k)))

    prompt_len = row_tokens - 2 * answer - 8
    return [text(prompt_len) for _ in range(inputs)], [[text(answer), text(answer)] for _ in range(inputs)]


# ------------------------------------------------------------------------------------------------ parts
def check_precision(shape, device, tokenizer, args, flash_ok, guard: Guard) -> list[dict]:
    """Max |Δ| and flips of every (attention, dtype) against fp32 eager, over every ordered pair."""
    model = build_model(shape, tokenizer).to(device)
    prompts, cands = make_inputs(tokenizer, "mixed", args.precision_inputs, args.precision_n, seed=args.seed)
    ref = _matrices(PairRM(model, tokenizer, device=device, attention="eager", batch_size=8), prompts, cands)
    iu = np.triu_indices(ref.shape[1], k=1)
    sym = np.abs((ref - ref.transpose(0, 2, 1))[:, iu[0], iu[1]])
    rows = []
    backends = [*ATTENTIONS] + (["flashdeberta"] if flash_ok else [])
    for dname, dtype in DTYPES.items():
        if dtype == torch.float16 and device.type == "cpu" and shape != "tiny":
            continue
        cast = _with_dtype(model, dtype)
        for backend in backends:
            if guard.over(f"precision {shape} {dname} {backend}"):
                continue
            row = {
                "part": "precision",
                "shape": shape,
                "dtype": dname,
                "attention": backend,
                "inputs": len(prompts),
                "n": len(cands[0]),
                "median_abs_symmetric_logit_fp32": float(np.median(sym)),
            }
            try:
                if backend == "flashdeberta":
                    m = copy.deepcopy(cast)
                    use_flashdeberta(m)
                    rm = PairRM(m, tokenizer, device=device, batch_size=8)
                else:
                    rm = _ranker(cast, tokenizer, device, backend, 8, row)
                if rm is not None:
                    out = _matrices(rm, prompts, cands)
                    flips, total = _symmetric_flips(out, ref)
                    row.update(max_abs_diff=float(np.abs(out - ref).max()), flips=flips, decisions=total, ok=True)
                    if backend != "flashdeberta":
                        _attention_in_use(rm, row, backend)
            except Exception as err:  # report and go on: one failing backend must not hide the others
                row.update(ok=False, error=f"{type(err).__name__}: {err}")
                traceback.print_exc()
            rows.append(row)
            _print_row(row)
        del cast
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _timed(fn, device, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def speed(shape, device, tokenizer, args, gemm, flash_ok, guard: Guard) -> list[dict]:
    """pairs/s of the engine variants and the original schedule on each workload (rank op, n candidates)."""
    model = build_model(shape, tokenizer).to(device)
    half = device.type == "cuda"
    variants = {
        "baseline": (model, None),
        "engine fp32": (model, "fused"),
        "engine+flex fp32": (model, "flex"),
        "engine+eager fp32": (model, "eager"),
    }
    if half:
        bf16 = _with_dtype(model, torch.bfloat16)
        variants |= {
            "engine bf16": (bf16, "fused"),
            "engine+flex bf16": (bf16, "flex"),
            "engine+eager bf16": (bf16, "eager"),
        }
        if flash_ok:
            flash = copy.deepcopy(bf16)
            use_flashdeberta(flash)
            variants["flashdeberta bf16"] = (flash, None)
    rows = []
    for workload in args.workloads:
        prompts, cands = make_inputs(tokenizer, workload, args.inputs, args.n, seed=args.seed)
        ref = None
        for name, (m, attention) in variants.items():
            if guard.over(f"speed {shape} {workload} {name}"):
                continue
            row = {
                "part": "speed",
                "shape": shape,
                "workload": workload,
                "variant": name,
                "inputs": len(prompts),
                "n": args.n,
                "pairs": len(prompts) * args.n * (args.n - 1),
            }
            try:
                rm = _ranker(m, tokenizer, device, attention, args.batch_size, row)
                if rm is None:
                    rows.append(row)
                    _print_row(row)
                    continue
                if name == "baseline":  # baseline_pair_logits runs transformers' eager attention, as upstream

                    def call(rm=rm, prompts=prompts, cands=cands):
                        return run_baseline(rm, "rank", prompts, cands, args.batch_size)[0]
                else:

                    def call(rm=rm, prompts=prompts, cands=cands, attention=attention):
                        # the fp32 variants share one model and attention is a setting of its modules: set it per call
                        with rm.model.use_attention(attention):
                            return _matrices(rm, prompts, cands)

                # warm-up on one input: cuBLAS handles, Triton/flex compilation, the caching allocator
                with rm.model.use_attention(attention):
                    PairRM.comparison_matrices(rm, prompts[:1], cands[:1])
                    if attention:
                        _attention_in_use(rm, row, attention)
                seconds, out = _timed(call, device, args.repeats)
                lengths = rm.engine._row_lengths(
                    rm.engine.encode(prompts, cands),
                    np.array(
                        [(e, i, j) for e in range(len(prompts)) for i in range(args.n) for j in range(args.n) if i != j]
                    ),
                )
                flops = model_flops(m, lengths)
                rate = gemm["fp32"] if "fp32" in name or name == "baseline" else gemm["bf16"]
                row.update(
                    seconds=seconds,
                    pairs_per_s=row["pairs"] / seconds,
                    model_tflops=flops / seconds / 1e12,
                    fraction_of_matmul_rate=flops / seconds / rate,
                    mean_row_tokens=float(lengths.mean()),
                    ok=True,
                )
                if ref is None:
                    ref = out
                flips, total = _symmetric_flips(out, ref)
                row.update(max_abs_diff_vs_baseline=float(np.abs(out - ref).max()), flips=flips, decisions=total)
            except Exception as err:
                row.update(ok=False, error=f"{type(err).__name__}: {err}")
                traceback.print_exc()
            rows.append(row)
            _print_row(row)
        here = [r for r in rows if r["workload"] == workload and r.get("ok")]
        base = next((r for r in here if r["variant"] == "baseline"), None)
        for r in here:
            # the fused engine of the same dtype: what flex (and eager) must beat
            fused = next((f for f in here if f["variant"] == "engine " + r["variant"].split()[-1]), None)
            r["speedup_vs_baseline"] = base["seconds"] / r["seconds"] if base else None
            r["speedup_vs_fused"] = fused["seconds"] / r["seconds"] if fused and r is not base else None
    if not guard.over(f"fixed-length rate {shape}"):
        rows += fixed_length_rate(
            shape, device, tokenizer, args, gemm, {k: v for k, v in variants.items() if k != "baseline"}, guard
        )
    del variants, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def fixed_length_rate(shape, device, tokenizer, args, gemm, variants, guard: Guard) -> list[dict]:
    """Model FLOP/s on rows of ``--row-tokens`` tokens (compare op: 2 rows per input) vs the matmul rate."""
    prompts, cands = fixed_length_inputs(tokenizer, args.row_tokens, args.fixed_inputs, seed=args.seed)
    rows = []
    for name, (m, attention) in variants.items():
        if guard.over(f"fixed-length rate {shape} {name}"):
            continue
        row = {
            "part": "fixed_length",
            "shape": shape,
            "variant": name,
            "row_tokens": args.row_tokens,
            "rows": 2 * len(prompts),
        }
        try:
            rm = _ranker(m, tokenizer, device, attention, args.batch_size, row)
            if rm is None:
                rows.append(row)
                _print_row(row)
                continue
            a, b = [c[0] for c in cands], [c[1] for c in cands]
            with rm.model.use_attention(attention):
                rm.compare(prompts[:2], a[:2], b[:2])  # warm-up
                seconds, _ = _timed(lambda rm=rm, a=a, b=b: rm.compare(prompts, a, b), device, args.repeats)
            stats = rm.engine.last_stats
            lengths = np.full(stats["rows"], stats["real_tokens"] / stats["rows"])
            flops = model_flops(m, lengths)
            rate = gemm["fp32"] if "fp32" in name else gemm["bf16"]
            row.update(
                seconds=seconds,
                mean_row_tokens=float(lengths[0]),
                model_tflops=flops / seconds / 1e12,
                fraction_of_matmul_rate=flops / seconds / rate,
                ok=True,
            )
        except Exception as err:
            row.update(ok=False, error=f"{type(err).__name__}: {err}")
            traceback.print_exc()
        rows.append(row)
        _print_row(row)
    return rows


def memory(shape, device, tokenizer, args, guard: Guard) -> list[dict]:
    """Peak memory of one full ranking (rank op) for each ``--memory-n`` (GPU: allocated; CPU: RSS), then at
    L = 2048 (the ``long`` workload: every row 2048 tokens, batches of 8 rows) for each attention."""
    model = build_model(shape, tokenizer).to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = _with_dtype(model, dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    rows = []
    runs = [("mixed", n, args.memory_inputs, "fused", args.batch_size) for n in args.memory_n]
    runs += [("long", args.long_n, 1, attention, 8) for attention in ATTENTIONS]
    for workload, n, inputs, attention, batch_size in runs:
        if guard.over(f"memory {shape} {workload} n={n} {attention}"):
            continue
        row = {
            "part": "memory",
            "shape": shape,
            "dtype": str(dtype).replace("torch.", ""),
            "workload": workload,
            "attention": attention,
            "n": n,
            "inputs": inputs,
            "batch_size": batch_size,
            "weights_mb": weights / 2**20,
        }
        rm = _ranker(model, tokenizer, device, attention, batch_size, row)
        if rm is not None:
            prompts, cands = make_inputs(tokenizer, workload, inputs, n, seed=args.seed)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                with PeakRSS() as rss:
                    rm.comparison_matrices(prompts, cands)
                    _sync(device)
                stats = rm.engine.last_stats
                row.update(
                    peak_rss_mb=rss.peak / 2**20,
                    max_batch_rows=stats["max_batch_rows"],
                    mean_row_tokens=stats["real_tokens"] / max(stats["rows"], 1),
                    ok=True,
                )
                _attention_in_use(rm, row, attention)
                if device.type == "cuda":
                    row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            except Exception as err:
                row.update(ok=False, error=f"{type(err).__name__}: {err}")
                traceback.print_exc()
        rows.append(row)
        _print_row(row)
    return rows


def packing(shape, device, tokenizer, args, guard: Guard) -> list[dict]:
    """Packing off and on (``PairRM(packing=...)``) with the fused and flex attention on the ``mixed`` workload:
    pairs/s, the padding each way, and max |Δ| against the unpacked run of the same attention."""
    row = {"part": "packing", "shape": shape}
    if "packing" not in inspect.signature(PairRM.__init__).parameters:
        return [{**row, "ok": False, "unavailable": "packing: not implemented (PairRM has no packing option)"}]
    model = build_model(shape, tokenizer).to(device)
    prompts, cands = make_inputs(tokenizer, "mixed", args.inputs, args.n, seed=args.seed)
    pairs = len(prompts) * args.n * (args.n - 1)
    rows = []
    for attention in ("fused", "flex"):
        ref = None
        for on in (False, True):
            if guard.over(f"packing {shape} {attention} {on}"):
                continue
            entry = {**row, "attention": attention, "packing": on}
            try:
                rm = PairRM(
                    model, tokenizer, device=device, batch_size=args.batch_size, packing=on, attention=attention
                )
                rm.comparison_matrices(prompts[:1], cands[:1])
                seconds, out = _timed(lambda rm=rm: _matrices(rm, prompts, cands), device, args.repeats)
            except Exception as err:  # noqa: BLE001 - a row that says why, the rest goes on
                rows.append({**entry, "ok": False, "unavailable": f"{type(err).__name__}: {err}"[:200]})
                _print_row(rows[-1])
                continue
            stats = rm.engine.last_stats
            ref = out if ref is None else ref
            rows.append(
                {
                    **entry,
                    "pairs_per_s": pairs / seconds,
                    "padding_fraction": 1 - stats["real_tokens"] / max(stats["padded_tokens"], 1),
                    "forward_calls": stats["forward_calls"],
                    "max_abs_diff_vs_unpacked": float(np.abs(out - ref).max()),
                    "ok": True,
                }
            )
            _attention_in_use(rm, rows[-1], attention)
            _print_row(rows[-1])
    return rows


# ------------------------------------------------------------------------------------------------ output
def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _print_row(row: dict) -> None:
    print("  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "part"), flush=True)


def print_tables(rows: list[dict]) -> None:
    """Markdown tables, one per part, ready for RESULTS.md; a row that could not run says why in its last cell."""
    columns = {
        "precision": ["shape", "dtype", "attention", "max_abs_diff", "flips", "decisions"],
        "speed": [
            "workload",
            "variant",
            "pairs_per_s",
            "speedup_vs_baseline",
            "speedup_vs_fused",
            "model_tflops",
            "fraction_of_matmul_rate",
            "max_abs_diff_vs_baseline",
            "flips",
        ],
        "fixed_length": ["variant", "mean_row_tokens", "model_tflops", "fraction_of_matmul_rate"],
        "memory": [
            "shape",
            "dtype",
            "workload",
            "attention",
            "n",
            "batch_size",
            "weights_mb",
            "peak_gpu_mb",
            "peak_rss_mb",
        ],
        "packing": [
            "shape",
            "attention",
            "packing",
            "pairs_per_s",
            "padding_fraction",
            "forward_calls",
            "max_abs_diff_vs_unpacked",
        ],
    }
    labels = ("shape", "dtype", "attention", "variant", "workload")
    for part, cols in columns.items():
        selected = [r for r in rows if r["part"] == part]
        if not selected:
            continue
        print(f"\n### {part}\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in selected:
            why = f"unavailable: {r['unavailable']}" if "unavailable" in r else f"FAILED: {r.get('error', '')}"
            cells = [
                _fmt(r.get(c, "")) if r.get("ok") or c in labels else (why[:90] if c == cols[-1] else "") for c in cols
            ]
            print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    """Run every part that this machine supports; print tables and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--parts", nargs="+", default=["precision", "speed", "memory", "packing"])
    p.add_argument("--workloads", nargs="+", default=None, help="default: short mixed long (CPU: short)")
    p.add_argument("--inputs", type=int, default=8, help="prompts per speed workload")
    p.add_argument("--n", type=int, default=6, help="candidates per prompt in the speed part")
    p.add_argument("--precision-inputs", type=int, default=6)
    p.add_argument("--precision-n", type=int, default=4)
    p.add_argument("--memory-inputs", type=int, default=2)
    p.add_argument("--memory-n", nargs="+", type=int, default=[4, 16], help="candidate counts of the memory part")
    p.add_argument("--long-n", type=int, default=None, help="candidates at L = 2048 (default 4: 12 rows; CPU: 2)")
    p.add_argument("--fixed-inputs", type=int, default=32, help="inputs (2 rows each) of the fixed-length rate")
    p.add_argument("--row-tokens", type=int, default=None, help="default 1024 (CPU: 256)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared, busy machine)")
    p.add_argument("--quick", action="store_true", help="half the inputs everywhere")
    p.add_argument("--max-seconds", type=float, default=450, help="wall-clock guard: skip what is left past this")
    p.add_argument("--json", default=None, help="default: $OUT/gpu_check.json when OUT is set")
    args = p.parse_args(argv)
    guard = Guard(args.max_seconds)
    if args.quick:
        args.inputs, args.fixed_inputs = max(1, args.inputs // 2), max(2, args.fixed_inputs // 2)
        args.precision_inputs = max(1, args.precision_inputs // 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    # CPU: a smoke run of the code paths (the tiny shape's mixed/long baselines take many minutes on 2 cores)
    args.workloads = args.workloads or (["short", "mixed", "long"] if cuda else ["short"])
    args.row_tokens = args.row_tokens or (1024 if cuda else 256)
    args.long_n = args.long_n or (4 if cuda else 2)
    flash_ok, flash_note = flashdeberta_available() if cuda else (False, "needs CUDA and triton")
    skipped = []
    if not cuda:
        skipped += [
            "precision on the large shape (fp16/bf16 on a 0.4B model is emulated on most CPUs)",
            "speed and memory on the large shape (run on the tiny shape instead, as a smoke test)",
            "bf16 matmul rate",
            "flashdeberta (needs CUDA and triton)",
        ]
    elif not flash_ok:
        skipped.append(f"flashdeberta: {flash_note}")
    if cuda:
        gemm = {"fp32": cuda_matmul_rate(torch.float32, device, 4096), "bf16": cuda_matmul_rate(torch.bfloat16, device)}
    else:
        gemm = {"fp32": gemm_rate(torch.float32, device), "bf16": float("nan")}
    machine = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cpu_count": os.cpu_count(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "matmul_fp32_tflops": gemm["fp32"] / 1e12,
        "matmul_bf16_tflops": gemm["bf16"] / 1e12,
        "flashdeberta": flash_note,
        "skipped": skipped,
    }
    print(json.dumps(machine, indent=1), flush=True)
    tokenizer = build_tokenizer()
    big = "large" if cuda else "tiny"
    rows: list[dict] = []
    try:
        if "precision" in args.parts:
            for shape in ("tiny", "large") if cuda else ("tiny",):
                if guard.over(f"precision {shape}"):
                    continue
                rows += check_precision(shape, device, tokenizer, args, flash_ok, guard)
        if "speed" in args.parts and not guard.over("speed"):
            rows += speed(big, device, tokenizer, args, gemm, flash_ok, guard)
        if "memory" in args.parts and not guard.over("memory"):
            rows += memory(big, device, tokenizer, args, guard)
        if "packing" in args.parts and not guard.over("packing"):
            rows += packing(big, device, tokenizer, args, guard)
    finally:  # whatever happened, what was measured is printed and written
        flex = [r for r in rows if r.get("attention") == "flex" or "flex" in str(r.get("variant", ""))]
        reasons = sorted({r["unavailable"] for r in flex if "unavailable" in r})
        machine["flex"] = ("unavailable: " + "; ".join(reasons)) if reasons else ("ran" if flex else "not reached")
        machine["packing"] = next((r["unavailable"] for r in rows if r["part"] == "packing" and not r["ok"]), None)
        machine["skipped"] = skipped + guard.skipped
        machine["seconds"] = time.perf_counter() - guard.start
        print_tables(rows)
        print(f"\nflex: {machine['flex']}\nskipped: {machine['skipped'] or 'nothing'}")
        print(f"total {machine['seconds']:.0f} s")
        path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
        if path:
            with open(path, "w") as f:
                json.dump({"machine": machine, "args": vars(args), "results": rows}, f, indent=1)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

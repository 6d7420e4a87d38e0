"""One-shot GPU check of pairrm-hf: precision of the fused attention, speed, memory and the flashdeberta kernel.

On a CUDA machine it runs, in a few minutes (about 3–5 on an H200 with the defaults):

1. **precision** — the fused and transformers' eager attention in fp32, bf16 and fp16 weights on the ``tiny`` and
   ``large`` (PairRM, deberta-v3-large shape, random weights) models; max |Δ logit| and symmetric decision flips
   against fp32 eager, over every ordered pair of the ``mixed`` benchmark inputs;
2. **speed** — pairs/s on the large shape for the ``short``, ``mixed`` and ``long`` workloads with the engine
   (fp32 and bf16; fused and eager attention) and with the original schedule (``benchmarks/baseline.py``, fp32
   eager, as upstream ran); model FLOP/s on rows of 1024 tokens against the bf16 matmul rate measured on the
   same GPU;
3. **memory** — peak GPU memory (``torch.cuda.max_memory_allocated``) of a full ranking for n = 4 and n = 16;
4. **flashdeberta** (optional) — the ``flashdeberta`` Triton kernel swapped in for every self-attention module:
   whether it matches fp32 eager to tolerance, and its pairs/s.

On a machine without CUDA it runs the parts that make sense on CPU (precision on the tiny shape, a tiny-shape
smoke run of the speed and memory code) and lists what it skipped. It prints tables and writes JSON.

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
def check_precision(shape, device, tokenizer, args, flash_ok) -> list[dict]:
    """Max |Δ| and flips of every (attention, dtype) against fp32 eager, over every ordered pair."""
    model = build_model(shape, tokenizer).to(device)
    prompts, cands = make_inputs(tokenizer, "mixed", args.precision_inputs, args.precision_n, seed=args.seed)
    ref = _matrices(PairRM(model, tokenizer, device=device, attention="eager", batch_size=8), prompts, cands)
    iu = np.triu_indices(ref.shape[1], k=1)
    sym = np.abs((ref - ref.transpose(0, 2, 1))[:, iu[0], iu[1]])
    rows = []
    backends = ["eager", "fused"] + (["flashdeberta"] if flash_ok else [])
    for dname, dtype in DTYPES.items():
        if dtype == torch.float16 and device.type == "cpu" and shape != "tiny":
            continue
        cast = _with_dtype(model, dtype)
        for backend in backends:
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
                    rm = PairRM(cast, tokenizer, device=device, attention=backend, batch_size=8)
                out = _matrices(rm, prompts, cands)
                flips, total = _symmetric_flips(out, ref)
                row.update(max_abs_diff=float(np.abs(out - ref).max()), flips=flips, decisions=total, ok=True)
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


def speed(shape, device, tokenizer, args, gemm, flash_ok) -> list[dict]:
    """pairs/s of the engine variants and the original schedule on each workload (rank op, n candidates)."""
    model = build_model(shape, tokenizer).to(device)
    half = device.type == "cuda"
    variants = {"baseline": (model, None), "engine fp32": (model, "fused"), "engine+eager fp32": (model, "eager")}
    if half:
        bf16 = _with_dtype(model, torch.bfloat16)
        variants |= {"engine bf16": (bf16, "fused"), "engine+eager bf16": (bf16, "eager")}
        if flash_ok:
            flash = copy.deepcopy(bf16)
            use_flashdeberta(flash)
            variants["flashdeberta bf16"] = (flash, None)
    rows = []
    for workload in args.workloads:
        prompts, cands = make_inputs(tokenizer, workload, args.inputs, args.n, seed=args.seed)
        ref = None
        for name, (m, attention) in variants.items():
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
                rm = PairRM(m, tokenizer, device=device, attention=attention, batch_size=args.batch_size)
                if name == "baseline":  # baseline_pair_logits runs transformers' eager attention, as upstream

                    def call(rm=rm, prompts=prompts, cands=cands):
                        return run_baseline(rm, "rank", prompts, cands, args.batch_size)[0]
                else:

                    def call(rm=rm, prompts=prompts, cands=cands):
                        return _matrices(rm, prompts, cands)

                # warm-up on one input: cuBLAS handles, Triton compilation, the caching allocator
                PairRM.comparison_matrices(rm, prompts[:1], cands[:1])
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
        base = next((r for r in rows if r["workload"] == workload and r["variant"] == "baseline" and r["ok"]), None)
        for r in rows:
            if r["workload"] == workload and r.get("ok") and base:
                r["speedup_vs_baseline"] = base["seconds"] / r["seconds"]
    rows += fixed_length_rate(
        shape, device, tokenizer, args, gemm, {k: v for k, v in variants.items() if k != "baseline"}
    )
    del variants, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def fixed_length_rate(shape, device, tokenizer, args, gemm, variants) -> list[dict]:
    """Model FLOP/s on rows of ``--row-tokens`` tokens (compare op: 2 rows per input) vs the matmul rate."""
    prompts, cands = fixed_length_inputs(tokenizer, args.row_tokens, args.fixed_inputs, seed=args.seed)
    rows = []
    for name, (m, attention) in variants.items():
        row = {
            "part": "fixed_length",
            "shape": shape,
            "variant": name,
            "row_tokens": args.row_tokens,
            "rows": 2 * len(prompts),
        }
        try:
            rm = PairRM(m, tokenizer, device=device, attention=attention, batch_size=args.batch_size)
            a, b = [c[0] for c in cands], [c[1] for c in cands]
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


def memory(shape, device, tokenizer, args) -> list[dict]:
    """Peak memory of one full ranking (rank op) for n = 4 and n = 16 candidates (GPU: allocated; CPU: RSS)."""
    model = build_model(shape, tokenizer).to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = _with_dtype(model, dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    rm = PairRM(model, tokenizer, device=device, batch_size=args.batch_size)
    rows = []
    for n in (4, 16):
        prompts, cands = make_inputs(tokenizer, "mixed", args.memory_inputs, n, seed=args.seed)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            rm.comparison_matrices(prompts, cands)
            _sync(device)
        row = {
            "part": "memory",
            "shape": shape,
            "dtype": str(dtype).replace("torch.", ""),
            "n": n,
            "inputs": len(prompts),
            "weights_mb": weights / 2**20,
            "peak_rss_mb": rss.peak / 2**20,
            "max_batch_rows": rm.engine.last_stats["max_batch_rows"],
            "ok": True,
        }
        if device.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append(row)
        _print_row(row)
    return rows


# ------------------------------------------------------------------------------------------------ output
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _print_row(row: dict) -> None:
    print("  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "part"), flush=True)


def print_tables(rows: list[dict]) -> None:
    """Markdown tables, one per part, ready for RESULTS.md."""
    columns = {
        "precision": ["shape", "dtype", "attention", "max_abs_diff", "flips", "decisions"],
        "speed": [
            "workload",
            "variant",
            "pairs_per_s",
            "speedup_vs_baseline",
            "model_tflops",
            "fraction_of_matmul_rate",
            "max_abs_diff_vs_baseline",
            "flips",
        ],
        "fixed_length": ["variant", "mean_row_tokens", "model_tflops", "fraction_of_matmul_rate"],
        "memory": ["shape", "dtype", "n", "inputs", "weights_mb", "peak_gpu_mb", "peak_rss_mb"],
    }
    for part, cols in columns.items():
        selected = [r for r in rows if r["part"] == part]
        if not selected:
            continue
        print(f"\n### {part}\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in selected:
            cells = [
                _fmt(r.get(c, ""))
                if r.get("ok") or c in ("shape", "dtype", "attention", "variant")
                else ("FAILED: " + r.get("error", "")[:60] if c == cols[-1] else "")
                for c in cols
            ]
            print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    """Run every part that this machine supports; print tables and write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--parts", nargs="+", default=["precision", "speed", "memory"])
    p.add_argument("--workloads", nargs="+", default=None, help="default: short mixed long (CPU: short)")
    p.add_argument("--inputs", type=int, default=8, help="prompts per speed workload")
    p.add_argument("--n", type=int, default=6, help="candidates per prompt in the speed part")
    p.add_argument("--precision-inputs", type=int, default=6)
    p.add_argument("--precision-n", type=int, default=4)
    p.add_argument("--memory-inputs", type=int, default=2)
    p.add_argument("--fixed-inputs", type=int, default=32, help="inputs (2 rows each) of the fixed-length rate")
    p.add_argument("--row-tokens", type=int, default=None, help="default 1024 (CPU: 256)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared, busy machine)")
    p.add_argument("--quick", action="store_true", help="half the inputs everywhere")
    p.add_argument("--json", default=None, help="default: $OUT/gpu_check.json when OUT is set")
    args = p.parse_args(argv)
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
    start = time.perf_counter()
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
    if "precision" in args.parts:
        for shape in ("tiny", "large") if cuda else ("tiny",):
            rows += check_precision(shape, device, tokenizer, args, flash_ok)
    if "speed" in args.parts:
        rows += speed(big, device, tokenizer, args, gemm, flash_ok)
    if "memory" in args.parts:
        rows += memory(big, device, tokenizer, args)
    machine["seconds"] = time.perf_counter() - start
    print_tables(rows)
    print(f"\nskipped: {skipped or 'nothing'}\ntotal {machine['seconds']:.0f} s")
    path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": rows}, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

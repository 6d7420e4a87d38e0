"""CPU backends side by side on fixed batch shapes: torch eager / fused / int8 against OpenVINO fp32 / int8.

Run from the repository root::

    python -m benchmarks.bench_backends --shape base --batches 8x256 2x1024 --rounds 3 --threads 2 \
        --json benchmarks/results/speed3_backends.json

Every variant runs the same PairRM forward pass (``model(input_ids, attention_mask)``, the engine's unit of work)
on the same padded batch. Rounds interleave the variants (A B C … A B C …) and each variant's median is reported,
so a load change on a shared machine hits all of them alike; ratios are taken within the run. |Δ logit| and
decision flips (sign changes of the logit) are against torch fp32 eager. Fresh processes then load the saved
model by path and report their time to the first result: with ``backend="openvino"`` twice (the first converts,
the second reads the cache: the warm start) and with ``backend="torch"``.

``openvino+int8-static`` is OpenVINO static int8 (``calibration=``) calibrated on synthetic rows of the workload
(:func:`calibration_rows`: random single-token words, rows as long as the timed batches'), not real text: its speed
is what this measures, its |Δ| only says the calibration took. Its ``setup s`` is conversion plus calibration, so
``calibration_s`` (reported) is that minus the OpenVINO fp32 variant's conversion.

A ``+bf16`` variant is what ``dtype="bfloat16"`` gives on the CPU: OpenVINO computes in bf16 from the same fp32 (or
int8) model where the CPU has native bf16, in f32 elsewhere (the row's ``inference_precision`` says which);
``torch-bf16`` is torch's bf16 weights, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.workloads import SHAPES, build_model, build_tokenizer, single_token_words
from pairrm_hf import PairRM
from pairrm_hf.ranking import openvino_backend
from pairrm_hf.ranking.openvino_backend import restore_backbone_weights

#: ``openvino-eager`` / ``openvino-eager+int8``: OpenVINO converted from transformers' eager attention (the graph
#: converted before the export forward) instead of ``openvino_backend.CONVERTED_ATTENTION``'s default.
VARIANTS = (
    "torch-eager",
    "torch-fused",
    "torch-export",
    "torch-int8",
    "openvino",
    "openvino+int8",
    "openvino+int8-static",
    "openvino+bf16",
    "openvino+int8+bf16",
    "openvino+int8-static+bf16",
    "torch-bf16",
    "openvino-eager",
    "openvino-eager+int8",
)


def make_batch(tokenizer, model, rows: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` packed rows of ``length`` tokens (the last row 3/4 as long, so the batch is padded)."""
    from pairrm_hf.tokenization.tokenization_pairrm import PairEncoder

    enc = PairEncoder(tokenizer)
    words = single_token_words(tokenizer)
    rng = np.random.default_rng(seed)
    ids = np.full((rows, length), enc.pad_id, dtype=np.int64)
    mask = np.zeros((rows, length), dtype=np.int64)
    for r in range(rows):
        real = length if r < rows - 1 or rows == 1 else (3 * length) // 4
        body = (real - 9) // 3
        texts = [" ".join(rng.choice(words, size=body)) for _ in range(3)]
        toks = enc.tokenize(texts)
        row = enc.pack(enc.source_segment(toks[0]), toks[1][:body], toks[2][:body])[:real]
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def calibration_rows(tokenizer, lengths: list[int], per_length: int = 8, seed: int = 1) -> list[dict]:
    """Synthetic calibration rows of the workload: ``per_length`` prompts with 4 candidates for each row length,
    each text a third of the row (random single-token words, as :func:`make_batch` builds the timed rows)."""
    words = single_token_words(tokenizer)
    rng = np.random.default_rng(seed)
    rows = []
    for length in lengths:
        body = max(1, (length - 9) // 3)
        for _ in range(per_length):
            texts = [" ".join(rng.choice(words, size=body)) for _ in range(5)]
            rows.append({"prompt": texts[0], "candidates": texts[1:]})
    return rows


def make_variant(
    model, tokenizer, variant: str, calibration: list[dict] | None = None, size: int | None = None
) -> PairRM:
    # "+bf16": OpenVINO computes in bf16 from the fp32 (or int8) model, as dtype="bfloat16" asks on the CPU
    bf16 = {"dtype": "bfloat16"} if variant.endswith("+bf16") else {}
    if variant.startswith("openvino+int8-static"):
        return PairRM(
            model,
            tokenizer,
            device="cpu",
            backend="openvino",
            quantize="int8",
            calibration=calibration,
            calibration_size=size,
            **bf16,
        )
    if variant.startswith("openvino"):
        default = openvino_backend.CONVERTED_ATTENTION
        openvino_backend.CONVERTED_ATTENTION = "eager" if variant.startswith("openvino-eager") else default
        try:
            return PairRM(
                model,
                tokenizer,
                device="cpu",
                backend="openvino",
                quantize="int8" if "int8" in variant else None,
                **bf16,
            )
        finally:
            openvino_backend.CONVERTED_ATTENTION = default
    if variant == "torch-bf16":  # torch's bf16 weights: a copy, so the other torch variants keep fp32
        import copy

        restore_backbone_weights(model.pretrained_model)  # an OpenVINO variant built before may have released them
        return PairRM(copy.deepcopy(model), tokenizer, device="cpu", dtype="bfloat16", backend="torch")
    if variant == "torch-int8":
        return PairRM(model, tokenizer, device="cpu", quantize="int8", backend="torch")
    return PairRM(model, tokenizer, device="cpu", attention=attention_of(variant), backend="torch")


def attention_of(variant: str) -> str | None:
    """The attention a torch variant must run with (``None`` for OpenVINO, whose graph is fixed at conversion)."""
    if variant.startswith("openvino"):
        return None
    return {"torch-eager": "eager", "torch-export": "export"}.get(variant, "fused")


def forward(rm: PairRM, ids: torch.Tensor, mask: torch.Tensor, attention: str | None = None) -> np.ndarray:
    """One engine-style forward pass (the backend swap included), fp32 logits.

    The torch variants share one model and the attention is a setting of its modules (the last variant built would
    otherwise decide it for all), so each pass sets ``attention`` for itself. An OpenVINO variant releases the shared
    torch backbone's weights; a torch pass reads them back first, as the engine's own loop does.
    """
    engine = rm.engine
    if engine.openvino_backbone is None:
        restore_backbone_weights(engine.model.pretrained_model)
    with torch.inference_mode(), engine.model.use_attention(attention), engine._compiled_backbone(reference=False):
        return engine.model(input_ids=ids, attention_mask=mask).logits.float().numpy()


def start_seconds(folder: str, cache: str, threads: int, backend: str) -> float:
    """Seconds from a fresh interpreter (imports included) to the first ranking of ``folder`` with ``backend``."""
    code = (
        f"import time; t = time.perf_counter(); import torch; torch.set_num_threads({threads}); "
        f"from pairrm_hf import PairRM; rm = PairRM.from_pretrained({folder!r}, backend={backend!r}); "
        "rm.rank('What is the capital of France?', ['Paris.', 'Berlin.']); print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PAIRRM_OPENVINO_CACHE": cache, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the model, time every variant per batch shape, print the table and save JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="base", choices=list(SHAPES))
    p.add_argument("--batches", nargs="+", default=["8x256", "2x1024"], help="ROWSxLENGTH")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS[:5]), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-warm-start", action="store_true", help="skip the fresh-process start times")
    p.add_argument(
        "--calibration-size", type=int, default=None, help="openvino+int8-static: calibration pairs (default 256)"
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = os.environ.setdefault("PAIRRM_OPENVINO_CACHE", tempfile.mkdtemp(prefix="pairrm_ov_bench_"))
    tokenizer = build_tokenizer()
    model = build_model(args.shape, tokenizer)
    specs = [tuple(int(x) for x in spec.lower().split("x")) for spec in args.batches]
    calibration = calibration_rows(tokenizer, sorted({length for _, length in specs}))
    rms, setup = {}, {}
    for variant in args.variants:
        start = time.perf_counter()
        rms[variant] = make_variant(model, tokenizer, variant, calibration, args.calibration_size)
        setup[variant] = time.perf_counter() - start
    if "openvino+int8-static" in setup:
        static = rms["openvino+int8-static"].engine.openvino_backbone
        print(
            f"openvino+int8-static: converted and calibrated in {setup['openvino+int8-static']:.1f} s "
            f"(openvino fp32 conversion: {setup.get('openvino', float('nan')):.1f} s), {static.precision}",
            flush=True,
        )
    rows = []
    for spec in args.batches:
        b, length = (int(x) for x in spec.lower().split("x"))
        ids, mask = make_batch(tokenizer, model, b, length)
        eager = rms.get("torch-eager") or make_variant(model, tokenizer, "torch-eager")
        reference = forward(eager, ids, mask, "eager")
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        outs = {}
        for v in args.variants:  # warm-up call (first-call allocations, OpenVINO shape inference)
            outs[v] = forward(rms[v], ids, mask, attention_of(v))
        for _ in range(args.rounds):
            for v in args.variants:
                start = time.perf_counter()
                forward(rms[v], ids, mask, attention_of(v))
                times[v].append(time.perf_counter() - start)
        base = statistics.median(times["torch-fused"]) if "torch-fused" in times else None
        for v in args.variants:
            ms = 1000 * statistics.median(times[v])
            rows.append(
                {
                    "shape": args.shape,
                    "batch": spec,
                    "variant": v,
                    "ms": ms,
                    "times_ms": [1000 * t for t in times[v]],
                    "speedup_vs_torch_fused": (1000 * base / ms) if base else None,
                    "max_abs_logit_diff": float(np.abs(outs[v] - reference).max()),
                    "flips": int((np.sign(outs[v]) != np.sign(reference)).sum()),
                    "rows": b,
                    "setup_s": setup[v],
                    "inference_precision": getattr(rms[v].engine.openvino_backbone, "inference_precision", None),
                }
            )
    head = f"{'shape':6} {'batch':8} {'variant':20} {'ms':>9} {'×fused':>7} {'max|Δ|':>9} {'flips':>5} {'setup s':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['shape']:6} {r['batch']:8} {r['variant']:20} {r['ms']:9.0f} "
            f"{(r['speedup_vs_torch_fused'] or float('nan')):7.2f} {r['max_abs_logit_diff']:9.2e} "
            f"{r['flips']:>5} {r['setup_s']:8.1f}"
        )
    print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), flush=True)
    starts = {}
    if not args.no_warm_start:
        # A saved checkpoint loaded by path, as users do: its cache entry is named by the checkpoint files, so the
        # first process converts (cold) and the second reads the entry back (warm). torch for comparison.
        folder = tempfile.mkdtemp(prefix="pairrm_bench_model_")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        starts["openvino_cold_s"] = start_seconds(folder, cache, args.threads, "openvino")
        starts["openvino_warm_s"] = start_seconds(folder, cache, args.threads, "openvino")
        starts["torch_s"] = start_seconds(folder, cache, args.threads, "torch")
        print(
            "fresh process to the first ranking: openvino first load (converts) {openvino_cold_s:.1f} s, "
            "openvino second load (cache hit) {openvino_warm_s:.1f} s, torch {torch_s:.1f} s".format(**starts)
        )
    if args.json:
        with open(args.json, "w") as f:
            calibration_s = (
                setup["openvino+int8-static"] - setup["openvino"]
                if {"openvino", "openvino+int8-static"} <= set(setup)
                else None
            )
            report = {"args": vars(args), "results": rows, "start_s": starts, "calibration_s": calibration_s}
            report["load_average"] = os.getloadavg()
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

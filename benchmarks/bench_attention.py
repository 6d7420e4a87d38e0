"""Fused and flex vs transformers' eager self-attention, one DeBERTa-v2 encoder layer, per shape (which path is faster
where).

Run from the repository root::

    python -m benchmarks.bench_attention --threads 1 --repeats 3 --json attention.json
    python -m benchmarks.bench_attention --hidden 768 --shapes 8x48 8x80 8x128 --repeats 7   # chosen cases
    python -m benchmarks.bench_attention --hidden 768 --shapes 8x256 2x1024 --impls eager fused flex --threads 2

For each (hidden, heads) and (batch, length) it builds one random encoder layer with PairRM's attention settings,
pads the first row to half its length, runs every implementation once untimed (flex compiles there; that time is
reported as ``flex_first_s``), then alternates the implementations ``--repeats`` times in one process and reports
the minimum ms per forward and the ratios to eager (< 1: faster than eager) and flex / fused.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import DebertaV2Config
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2Encoder

from pairrm_hf.models.attention import ATTENTION_IMPLEMENTATIONS, set_attention_implementation
from pairrm_hf.models.flex_attention import flex_stats

#: (hidden, heads, [(batch, length)…]): the tiny shape (head size 8) and the base shape (head size 64).
CASES = [
    (32, 4, [(8, 80), (16, 64), (16, 256), (4, 1024), (2, 2048)]),
    (768, 12, [(8, 80), (16, 64), (16, 256), (4, 1024), (1, 2048)]),
]


def encoder_layer(hidden: int, heads: int, layers: int = 1) -> DebertaV2Encoder:
    """A random encoder (one layer unless told) with PairRM's relative-attention configuration."""
    cfg = DebertaV2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        relative_attention=True,
        position_buckets=256 if hidden > 32 else 64,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=-1,
    )
    return DebertaV2Encoder(cfg).eval()


def main(argv: list[str] | None = None) -> int:
    """Time every case, print one line each and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="only these hidden sizes of the table")
    p.add_argument("--shapes", nargs="+", default=None, help="BATCHxLENGTH cases instead of the table's, e.g. 8x80")
    p.add_argument("--layers", type=int, default=1, help="encoder layers (default 1; 12 = the base model's)")
    p.add_argument("--impls", nargs="+", default=["eager", "fused"], choices=ATTENTION_IMPLEMENTATIONS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for hidden, heads, shapes in CASES:
        if args.hidden and hidden not in args.hidden:
            continue
        if args.shapes:
            shapes = [tuple(int(v) for v in case.lower().split("x")) for case in args.shapes]
        encoder = encoder_layer(hidden, heads, args.layers)
        for batch, length in shapes:
            x = torch.randn(batch, length, hidden)
            mask = torch.ones(batch, length, dtype=torch.long)
            mask[0, length // 2 :] = 0
            times: dict[str, list[float]] = {impl: [] for impl in args.impls}
            first: dict[str, float] = {}
            outputs: dict[str, torch.Tensor] = {}
            with torch.inference_mode():
                for impl in args.impls:  # untimed warm-up; flex compiles its graph for this length here
                    set_attention_implementation(encoder, impl)
                    start = time.perf_counter()
                    outputs[impl] = encoder(x, mask).last_hidden_state
                    first[impl] = time.perf_counter() - start
                for impl in args.impls * args.repeats:
                    set_attention_implementation(encoder, impl)
                    start = time.perf_counter()
                    encoder(x, mask)
                    times[impl].append(time.perf_counter() - start)
            row = {"hidden": hidden, "heads": heads, "layers": args.layers, "batch": batch, "length": length}
            real = mask.bool()
            for impl in args.impls:
                if impl != "eager" and "eager" in outputs:  # real tokens only: padded rows are undefined
                    diff = (outputs[impl][real] - outputs["eager"][real]).abs().max()
                    row[f"{impl}_max_abs_diff"] = float(diff)
            row.update({f"{impl}_ms": 1000 * min(times[impl]) for impl in args.impls})
            for impl in args.impls:
                if impl != "eager" and "eager" in times:
                    row[f"{impl}_over_eager"] = row[f"{impl}_ms"] / row["eager_ms"]
            if "flex" in times and "fused" in times:
                row["flex_over_fused"] = row["flex_ms"] / row["fused_ms"]
            if "flex" in first:
                row["flex_first_s"] = first["flex"]
            rows.append(row)
            print(
                f"hidden {hidden:4} heads {heads:2} batch {batch:2} L {length:4}: "
                + " ".join(f"{impl} {row[impl + '_ms']:9.1f} ms" for impl in args.impls)
                + "".join(f"  {k} {v:.2f}" for k, v in row.items() if k.endswith(("_over_eager", "_over_fused")))
                + "".join(f"  {k} {v:.1e}" for k, v in row.items() if k.endswith("_max_abs_diff")),
                flush=True,
            )
    if "flex" in args.impls:
        print(f"flex: {flex_stats()}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            extra = {"flex": flex_stats()} if "flex" in args.impls else {}
            json.dump({"threads": torch.get_num_threads(), "rows": rows, **extra}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

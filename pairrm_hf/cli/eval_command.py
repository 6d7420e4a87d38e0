"""``pairrm eval``: preference accuracy and the selection/comparison-budget trade-off, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..evaluation.metrics import pairwise_accuracy, plot_tradeoff, selection_tradeoff
from ..ranking.inputs import INPUT_FORMATS
from ..utils.checks import positive_int_argument
from .options import add_backend_option, add_quantize_options, quantize_kwargs

__all__ = ["eval_main"]

_FILE_TYPES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet", ".pq", ".txt")


def _load_rows(data: str, split: str) -> list[dict]:
    from ..data.mixinstruct import read_jsonl

    if os.path.isfile(data):
        return read_jsonl(data)
    if not os.path.isdir(data) and (
        os.path.splitext(data)[1].lower() in _FILE_TYPES or data.startswith((".", os.sep, "~"))
    ):
        # A file path, not a Hub dataset id: say so instead of "couldn't reach the Hub".
        raise FileNotFoundError(
            f"--data {data}: no such file (the file does not exist; a Hub dataset id looks like 'org/name')"
        )
    import datasets

    return list(datasets.load_dataset(data, split=split))


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``pairrm eval``: preference accuracy (``--task preference``), the selection trade-off on MixInstruct-style
    candidate sets (``--task ranking``), or the paper's ranker comparison (``--task compare --models A B ...``:
    GPT-Rank, top-k, beat-X, correlations, comparisons per example; prints a table). Prints a JSON result (compare:
    the table, JSON in ``--output``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="pairrm eval", description=eval_main.__doc__)
    parser.add_argument("--model", default="llm-blender/PairRM-hf", help="PairRM folder or Hub id")
    parser.add_argument("--data", required=True, help=".jsonl/.json file or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--task", choices=("preference", "ranking", "compare"), default="preference")
    parser.add_argument(
        "--models", nargs="+", help="compare task: ranker folders/ids (PairRM, PairRanker, SummaReranker, DualReranker)"
    )
    parser.add_argument("--beat", nargs="*", default=[], help="compare task: Beat-X baselines (candidate model names)")
    parser.add_argument("--subset-key", default="subset")
    parser.add_argument("--section-map", help="JSON file {section: [subsets]} for RewardBench section scores")
    parser.add_argument("--tie-value", type=float, default=0.0, help="credit of an exact tie (preference task)")
    parser.add_argument(
        "--input-format",
        default="auto",
        choices=INPUT_FORMATS,
        help="conversation: format every row through the original's conversation template, as "
        "RewardBench scores PairRM (default: %(default)s)",
    )
    parser.add_argument("--metric", action="append", help="candidate score metric(s) to rank by (ranking task)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--plot", help="write the trade-off plot to this PNG (ranking task; needs matplotlib)")
    parser.add_argument("--limit", type=positive_int_argument)
    parser.add_argument("--batch-size", type=positive_int_argument, default=16)
    parser.add_argument("--device")
    add_backend_option(parser)
    # measure what int8 costs in accuracy: the same evaluation on the quantized ranker(s)
    add_quantize_options(parser)
    parser.add_argument("--output", "-o", help="also write the JSON result here")
    args = parser.parse_args(argv)
    from ..data.mixinstruct import MixInstructExample, candidate_scores
    from ..ranking.ranker import PairRM

    try:
        rows = _load_rows(args.data, args.split)[: args.limit]
        if args.task == "compare":
            return _compare(args, rows)
        rm = PairRM.from_pretrained(
            args.model, device=args.device, batch_size=args.batch_size, backend=args.backend, **quantize_kwargs(args)
        )
        if args.task == "preference":
            section_map = None
            if args.section_map:
                with open(args.section_map, encoding="utf-8") as f:
                    section_map = json.load(f)
            result: Any = pairwise_accuracy(
                rm,
                rows,
                subset_key=args.subset_key,
                section_map=section_map,
                tie_value=args.tie_value,
                input_format=args.input_format,
            )
            result.pop("margins")
        else:
            examples = [MixInstructExample.from_dict(r, k) for k, r in enumerate(rows)]
            ref = [candidate_scores(ex, args.metric) for ex in examples]
            result = selection_tradeoff(
                rm,
                [ex.source for ex in examples],
                [[c.text for c in ex.candidates] for ex in examples],
                ref_scores=ref,
                budgets=args.budgets,
                input_format=args.input_format,
            )
            if args.plot:
                plot_tradeoff(result, args.plot)
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"pairrm eval: error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


def _compare(args, rows: list[dict]) -> int:
    """``--task compare``: every ranker on the same rows; prints the side-by-side table."""
    from ..evaluation.metrics import compare_rankers, format_comparison_table
    from ..ranking.ranker import PairRM

    if not args.models:
        raise ValueError("--task compare needs --models (two or more ranker folders or ids)")
    rankers = {
        m: PairRM.from_pretrained(
            m, device=args.device, batch_size=args.batch_size, backend=args.backend, **quantize_kwargs(args)
        )
        for m in args.models
    }
    results = compare_rankers(rankers, rows, metrics=args.metric, beat=args.beat)
    print(format_comparison_table(results))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(json.dumps(results, indent=2, default=float) + "\n")
    return 0

"""The ``pairrm`` command. ``pairrm rank --prompt P --candidates A B C`` ranks answers with PairRM."""

from __future__ import annotations

import argparse
import json
import sys

from .loading import DEFAULT_MODEL

__all__ = ["main", "build_parser"]


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: as loaded)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pairrm`` command."""
    parser = argparse.ArgumentParser(prog="pairrm", description="Rank and compare LLM answers with PairRM.")
    sub = parser.add_subparsers(dest="command", required=True)
    rank = sub.add_parser("rank", help="rank candidate answers to one prompt, best first")
    rank.add_argument("--prompt", required=True, help="the prompt (instruction + input)")
    rank.add_argument("--candidates", nargs="+", required=True, help="candidate answers")
    rank.add_argument("--aggregation", default="max_logits", choices=["max_logits", "max_wins", "bubble"])
    rank.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_model_options(rank)
    return parser


def _rank(args: argparse.Namespace) -> int:
    from .ranker import PairRM

    rm = PairRM.from_pretrained(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    ranked = rm.rank(args.prompt, args.candidates, aggregation=args.aggregation)
    if args.json:
        print(json.dumps([r.__dict__ for r in ranked], ensure_ascii=False))
    else:
        for r in ranked:
            print(f"{r.rank:>3}  {r.score:+.4f}  [{r.index}] {r.text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pairrm`` console script; returns the exit code (0 ok, 2 usage, 1 failure)."""
    args = build_parser().parse_args(argv)
    try:
        return {"rank": _rank}[args.command](args)
    except (ValueError, TypeError) as err:
        print(f"pairrm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"pairrm {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

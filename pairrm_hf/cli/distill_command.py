"""``pairrm distill``: train a one-pass student reward model from a PairRM teacher on a file of candidate sets."""

from __future__ import annotations

import argparse
import json
import os

from .options import add_quantize_options, model_kwargs

__all__ = ["add_distill_parser", "distill_command"]


def add_distill_parser(sub, add_model_options, positive) -> None:
    """Add the ``distill`` subcommand to the ``pairrm`` parser (``--model`` is the teacher)."""
    from ..ranking.methods import RANKING_METHODS

    distill = sub.add_parser(
        "distill",
        help="distil the --model ranker into a one-pass AutoModelForSequenceClassification reward model",
        description="Ranks every row's candidates with the teacher (--model), trains a one-label student on "
        "(prompt, answer) text pairs to reproduce those rankings, and saves it with its tokenizer and a model card "
        "to --output-dir. Rows: {prompt, candidates} (see --prompt-column/--candidates-column) or MixInstruct rows.",
    )
    distill.add_argument("input", help="training rows: .jsonl/.json/.csv/.parquet, a datasets folder or a Hub id")
    distill.add_argument("-o", "--output-dir", required=True, help="folder for the student")
    distill.add_argument(
        "--student", default="microsoft/deberta-v3-base", help="encoder folder or Hub id (default: %(default)s)"
    )
    distill.add_argument("--eval", default=None, help="held-out rows: top-1 and pairwise agreement with the teacher")
    distill.add_argument("--split", default=None, help="split of a Hub dataset or DatasetDict folder")
    distill.add_argument("--prompt-column", default="prompt", help="default: %(default)s")
    distill.add_argument("--candidates-column", default="candidates", help="default: %(default)s")
    distill.add_argument(
        "--loss", default="ranknet", help="ranknet, listwise or ranknet+listwise (default: %(default)s)"
    )
    distill.add_argument(
        "--schedule",
        default="max_logits",
        choices=sorted(RANKING_METHODS),
        help="teacher ranking (default: full matrix)",
    )
    distill.add_argument("--temperature", type=float, default=1.0, help="default: %(default)s")
    distill.add_argument("--epochs", type=float, default=1.0, help="default: %(default)s")
    distill.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    distill.add_argument("--learning-rate", type=float, default=2e-5, help="default: %(default)s")
    distill.add_argument("--sets-per-step", type=positive, default=8, help="candidate sets per step (default: 8)")
    distill.add_argument("--max-length", type=positive, default=512, help="tokens per (prompt, answer) row")
    distill.add_argument("--seed", type=int, default=42)
    distill.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the student to this Hub repo")
    distill.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    add_model_options(distill)
    # the teacher's precision: an int8 teacher labels faster, and its rankings are what the student learns
    add_quantize_options(distill)


def _rows(path: str, split: str | None, prompt_column: str, candidates_column: str) -> list[dict]:
    """Candidate-set rows of ``path``; ``InputError`` naming the file and row for an unreadable row."""
    from ..data.mixinstruct import is_mixinstruct_row
    from ..jobs.io import InputError, decode_csv_lists, read_table

    table = read_table(path, split=split)
    if table.problems:
        p = table.problems[0]
        raise InputError(f"{path}: {p.location}: {p.reason}")
    decode_csv_lists(table, [candidates_column], [prompt_column])
    rows = []
    for row, where in zip(table.rows, table.locations):
        if is_mixinstruct_row(row):
            rows.append(row)
            continue
        missing = [c for c in (prompt_column, candidates_column) if c not in row]
        if missing:
            raise InputError(f"{path}: {where}: no column {missing[0]!r} (columns: {sorted(row)})")
        if not isinstance(row[candidates_column], list):
            found = type(row[candidates_column]).__name__
            raise InputError(f"{path}: {where}: {candidates_column!r} must be a list of answers, got {found}")
        rows.append({"prompt": row[prompt_column], "candidates": row[candidates_column]})
    return rows


def distill_command(args: argparse.Namespace) -> int:
    """Run ``pairrm distill``; prints the final metrics as JSON."""
    from ..checkpoints.model_card import ModelCardInfo
    from ..jobs.io import InputError
    from ..ranking.ranker import PairRM
    from ..training.distillation import DISTILL_LOSSES, distill_pairrm

    if args.loss not in DISTILL_LOSSES:
        raise InputError(f"--loss must be one of {', '.join(DISTILL_LOSSES)}, got {args.loss!r}")
    if os.path.isfile(args.output_dir):
        raise InputError(f"{args.output_dir}: is a file; pass a folder")
    data = _rows(args.input, args.split, args.prompt_column, args.candidates_column)
    eval_data = None
    if args.eval:
        eval_data = _rows(args.eval, args.split, args.prompt_column, args.candidates_column)
    teacher = PairRM.from_pretrained(args.model, **model_kwargs(args))
    result = distill_pairrm(
        teacher,
        data,
        eval_data,
        student=args.student,
        output_dir=args.output_dir,
        loss=args.loss,
        schedule=args.schedule,
        temperature=args.temperature,
        max_length=args.max_length,
        model_card=ModelCardInfo(repo_id=args.push_to_hub, teacher=args.model),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.sets_per_step,
        seed=args.seed,
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )
    if args.push_to_hub:
        from ..checkpoints.hub import push_folder

        push_folder(args.output_dir, args.push_to_hub, private=args.private, message="Upload distilled PairRM student")
    print(json.dumps({"output_dir": result.output_dir, **result.metrics}))
    return 0

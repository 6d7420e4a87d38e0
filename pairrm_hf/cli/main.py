"""The ``pairrm`` command: rank, compare, score and label files and datasets; convert, inspect and distil checkpoints.

``pairrm rank --prompt P --candidates A B C`` ranks answers to one prompt; ``pairrm rank data.jsonl -o out.jsonl``
ranks every row of a file (JSONL, JSON, CSV, Parquet, a ``datasets`` folder or a Hub dataset id). File jobs are
chunked and resumable (see :mod:`pairrm_hf.jobs.runner`). Exit codes: 0 success, 2 usage or input errors, 1 other failures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..checkpoints.loading import DEFAULT_MODEL
from ..jobs.io import InputError
from ..jobs.tasks import LABEL_STRATEGIES, TaskSpec
from ..ranking.inputs import INPUT_FORMATS
from ..ranking.methods import RANKING_METHODS
from ..ranking.ranker import REF_MODES
from ..utils.checks import duration_argument, positive_int_argument
from ..utils.version import __version__
from .distill_command import add_distill_parser, distill_command
from .options import add_attention_option, add_backend_option, add_quantize_options, model_kwargs
from .serve_command import add_serve_parsers, demo_command, serve_command  # servers import lazily

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep that, and make ``main`` return instead of exiting."""

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int):
        self.status = status


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default: %(default)s)")
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 … (default: cuda when available; under accelerate launch: the process's device)",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        help="float32, bfloat16 or float16 (default: as loaded). bfloat16 on CPU with OpenVINO keeps fp32 weights and "
        "computes in bf16 where the CPU has it (AVX512-BF16, AMX), in f32 elsewhere",
    )
    parser.add_argument(
        "--batch-size", type=positive_int_argument, default=16, help="pairs per forward pass (default: %(default)s)"
    )
    add_backend_option(parser)
    parser.add_argument(
        "--backbone-config",
        default=None,
        help="legacy checkpoints with an unknown backbone: folder with the backbone's config.json",
    )


def _shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT such as 0/4, got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= INDEX < COUNT, got {value!r}")
    return index, count


def _add_input_format(parser) -> None:
    parser.add_argument(
        "--input-format",
        default="auto",
        choices=INPUT_FORMATS,
        help="auto: plain strings stay plain, chat messages use the original's conversation template; "
        "conversation: the template for plain strings too, as RewardBench (default: %(default)s)",
    )


def _add_job_options(parser: argparse.ArgumentParser, required_input: bool = True) -> None:
    g = parser.add_argument_group("input and output")
    g.add_argument(
        "input",
        nargs=None if required_input else "?",
        help="a .jsonl/.json/.csv/.parquet file, a datasets folder (save_to_disk) or a Hub dataset id",
    )
    g.add_argument("-o", "--output", help="output file; its extension picks the format (.jsonl .json .csv .parquet)")
    g.add_argument("--split", default=None, help="split of a DatasetDict folder or Hub dataset")
    g.add_argument("--limit", type=positive_int_argument, default=None, help="only the first N rows")
    g.add_argument("--prompt-column", default="prompt", help="default: %(default)s")
    g.add_argument("--instruction-column", default=None, help="text put before each prompt (upstream's instruction)")
    _add_input_format(g)
    j = parser.add_argument_group("job")
    j.add_argument(
        "--chunk-size", type=positive_int_argument, default=1000, help="rows per resumable chunk (default: %(default)s)"
    )
    j.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="INDEX/COUNT",
        help="compute only chunks k with k %% COUNT == INDEX (round-robin); then run `pairrm merge OUTPUT`",
    )
    j.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="bad rows: stop before computing (raise, default) or write them to OUTPUT.rejects.jsonl (skip)",
    )
    j.add_argument("--overwrite", action="store_true", help="discard an existing output or unfinished job")
    j.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after assembling")
    j.add_argument("--no-progress", action="store_true", help="no progress bar (nor transformers' loading bar)")
    j.add_argument(
        "--progress-interval",
        type=duration_argument(allow_zero=True),
        default=30.0,
        metavar="SECONDS",
        help="when stderr is no terminal (a log file): a progress line every SECONDS (default: %(default)s)",
    )
    _add_model_options(parser)
    add_attention_option(parser)
    add_quantize_options(parser)


def _methods_help() -> str:
    # read when the parser is built, so methods registered before main() runs are listed with the built-ins
    lines = "; ".join(f"{m.name}: {m.description}" for m in RANKING_METHODS.values())
    return f"ranking method (default: %(default)s). {lines}".replace("%", "%%").replace("%%(default)s", "%(default)s")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pairrm`` command."""
    parser = _Parser(prog="pairrm", description="Rank, compare, score and label LLM answers with PairRM.")
    parser.add_argument("--version", action="version", version=f"pairrm-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rank = sub.add_parser(
        "rank",
        help="rank candidates: one prompt (--prompt/--candidates) or every row of a file",
        description="Rank candidate answers. Adds pairrm_scores and pairrm_ranks (1 = best) to "
        "every row of INPUT, or prints the ranking of --prompt/--candidates.",
    )
    _add_job_options(rank, required_input=False)
    rank.add_argument("--prompt", help="rank the answers to this one prompt (no file)")
    rank.add_argument("--candidates", nargs="+", help="candidate answers for --prompt")
    rank.add_argument(
        "--json",
        action="store_true",
        help="with --prompt: print JSON instead of a table (index, candidate, score, rank; text = candidate)",
    )
    rank.add_argument("--candidates-column", default="candidates", help="default: %(default)s")
    rank.add_argument("--aggregation", default="max_logits", choices=RANKING_METHODS, help=_methods_help())
    rank.add_argument("--seed", type=int, default=0, help="seed of the bubble aggregation")

    compare = sub.add_parser(
        "compare",
        help="compare two answer columns",
        description="Adds pairrm_logit (> 0: A is better) and pairrm_prob_a = sigmoid(logit).",
    )
    _add_job_options(compare)
    compare.add_argument("--a-column", default="a", help="default: %(default)s")
    compare.add_argument("--b-column", default="b", help="default: %(default)s")
    compare.add_argument("--mode", default="symmetric", choices=["symmetric", "ab", "ba"])

    score = sub.add_parser(
        "score",
        help="rewards of candidates against a reference",
        description="Adds pairrm_rewards: C[c,ref] - C[ref,c] per candidate (PairRM.rank_with_ref).",
    )
    _add_job_options(score)
    score.add_argument("--candidates-column", default="candidates", help="default: %(default)s")
    score.add_argument("--reference-column", default=None, help="reference answers (default: pick by --ref-mode)")
    score.add_argument(
        "--ref-mode",
        default="longest",
        choices=REF_MODES,
        help="reference pick without --reference-column (longest_lexical: ties by text, not input order)",
    )

    label = sub.add_parser(
        "label",
        help="DPO preference pairs from ranked candidates",
        description="Writes one row per pair: input columns + chosen, rejected, chosen_index, "
        "rejected_index, score_chosen, score_rejected, rank_chosen, rank_rejected. Rows whose candidates all tie give no pair.",
    )
    _add_job_options(label)
    label.add_argument("--candidates-column", default="candidates", help="default: %(default)s")
    label.add_argument("--strategy", default="best_vs_worst", choices=list(LABEL_STRATEGIES))
    label.add_argument("--aggregation", default="max_logits", choices=RANKING_METHODS, help=_methods_help())
    label.add_argument("--seed", type=int, default=0, help="seed of best_vs_random and bubble")

    merge = sub.add_parser(
        "merge",
        help="assemble OUTPUT from the chunks written by --shard jobs",
        description="Reads OUTPUT.parts/manifest.json, checks every chunk is done, writes OUTPUT.",
    )
    merge.add_argument("output")
    merge.add_argument("--keep-parts", action="store_true")

    convert = sub.add_parser("convert", help="convert a legacy llm-blender/PairRM checkpoint to the HF-native layout")
    convert.add_argument("source", help="legacy checkpoint folder or Hub id")
    convert.add_argument("destination", help="new folder")
    convert.add_argument(
        "--backbone-config",
        default=None,
        help="folder with the backbone's config.json, when the legacy config's model_name is not a DeBERTa-v3 size",
    )
    convert.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the result to this Hub repo")

    # `pairrm eval` has its own parser (pairrm_hf.cli.eval_command.eval_main); listed here for `pairrm --help`.
    sub.add_parser(
        "eval",
        help="evaluate a ranker: preference accuracy or the selection trade-off (see eval --help)",
        add_help=False,
    )
    info = sub.add_parser(
        "info",
        help="show a checkpoint's layout, size, device, dtype and token budgets",
        description="With --quantize int8 the model is also loaded as a quantized job would load it, and the "
        "backend that applies the int8 and its scheme (dynamic, weight-only or static) are shown.",
    )
    _add_model_options(info)
    add_quantize_options(info)
    info.add_argument("--json", action="store_true")
    add_serve_parsers(sub, _add_model_options, positive_int_argument)
    add_distill_parser(sub, _add_model_options, positive_int_argument)
    return parser


def _rank_one(args: argparse.Namespace) -> int:
    from ..ranking.ranker import PairRM

    if not args.candidates:
        raise InputError("--prompt needs --candidates")
    rm = PairRM.from_pretrained(args.model, **model_kwargs(args))
    ranked = rm.rank(args.prompt, args.candidates, aggregation=args.aggregation, input_format=args.input_format)
    if args.json:
        # "candidate", as the pairwise-ranking pipeline names it; "text" is this command's older name, kept
        print(json.dumps([{**r.as_dict(), "text": r.candidate} for r in ranked], ensure_ascii=False))
    else:
        for r in ranked:
            print(f"{r.rank:>3}  {r.score:+.4f}  [{r.index}] {r.text}")
    return 0


def _spec(args: argparse.Namespace) -> TaskSpec:
    kwargs = {
        "task": args.command,
        "prompt_column": args.prompt_column,
        "instruction_column": args.instruction_column,
        "input_format": args.input_format,
    }
    for name in (
        "candidates_column",
        "a_column",
        "b_column",
        "reference_column",
        "aggregation",
        "ref_mode",
        "strategy",
        "seed",
    ):
        if hasattr(args, name):
            kwargs[name] = getattr(args, name)
    if hasattr(args, "mode"):
        kwargs["compare_mode"] = args.mode
    return TaskSpec(**kwargs)


def _print_summary(s: dict) -> None:
    rate = s["pairs"] / s["seconds"] if s["seconds"] > 0 else 0.0
    rows_rate = s["rows_computed"] / s["seconds"] if s["seconds"] > 0 else 0.0
    by_others = f", {s['chunks_by_others']} finished by another process" if s.get("chunks_by_others") else ""
    lines = [
        f"rows: {s['rows']} in {s['chunks']} chunks; computed now: {s['chunks_computed']} chunks / {s['rows_computed']} rows"
        f" ({s['chunks_done_before']} chunks were already done){by_others}; rejected: {s['rejected']}",
        f"time: {s['seconds']:.1f} s, {rows_rate:.1f} rows/s; ordered pairs scored: {s['pairs']} ({rate:.1f} pairs/s; "
        f"{s['forward_rows']} model rows after de-duplication)",
    ]
    if s.get("rejects"):
        lines.append(f"rejected rows written to {s['rejects']}")
    if s["output"]:
        lines.append(f"output: {s['output']}")
    elif s.get("process"):
        lines.append(f"process {s['process']} done; the main process writes the output")
    else:
        lines.append("shard done; run `pairrm merge OUTPUT` once all shards are done")
    print("\n".join("pairrm: " + line for line in lines), file=sys.stderr)


def _job(args: argparse.Namespace) -> int:
    from ..jobs.runner import JobConfig, run_job

    if args.command == "rank" and args.prompt is not None:
        if args.input is not None:
            raise InputError("pass either INPUT or --prompt/--candidates, not both")
        return _rank_one(args)
    if args.input is None:
        raise InputError("missing INPUT (or --prompt/--candidates for a single prompt)")
    if args.output is None:
        raise InputError("missing -o/--output")
    cfg = JobConfig(
        input=args.input,
        output=args.output,
        spec=_spec(args),
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        backbone_config=args.backbone_config,
        backend=args.backend,
        attention=args.attention,
        packing=args.packing,
        quantize=args.quantize,
        calibration=args.calibration,
        calibration_size=args.calibration_size,
        split=args.split,
        limit=args.limit,
        chunk_size=args.chunk_size,
        on_error=args.on_error,
        overwrite=args.overwrite,
        shard=args.shard,
        keep_parts=args.keep_parts,
        progress=not args.no_progress,
        progress_interval=args.progress_interval,
    )
    _print_summary(run_job(cfg))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ..jobs.runner import merge_job

    _print_summary(merge_job(args.output, keep_parts=args.keep_parts))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..checkpoints.loading import convert_legacy_checkpoint

    if os.path.exists(args.destination) and os.listdir(args.destination):
        raise InputError(f"{args.destination}: exists and is not empty")
    folder = convert_legacy_checkpoint(args.source, args.destination, backbone_config=args.backbone_config)
    if args.push_to_hub:
        from ..checkpoints.hub import push_folder
        from ..checkpoints.model_card import ModelCardInfo, write_model_card

        write_model_card(folder, kind="pairrm", info=ModelCardInfo(repo_id=args.push_to_hub, base_model=args.source))
        push_folder(folder, args.push_to_hub, message="Upload PairRM converted to the HF-native layout")
    print(folder)
    return 0


def _quantized_load(args: argparse.Namespace) -> dict | None:
    """``info --quantize int8``: what a quantized load of ``args.model`` gives (``None`` without ``--quantize``).

    The model is loaded as ``serve`` and the jobs load it (the same options, the OpenVINO cache), so the backend is
    the one ``auto`` really picks here; ``scheme`` is torch's ``dynamic`` int8 or OpenVINO's ``weight-only`` or
    ``static`` (calibrated) int8."""
    from ..ranking.openvino_quantization import checked_calibration
    from ..ranking.ranker import PairRM

    # refused or read before anything loads, as the jobs do (a bad file names its row and field)
    calibration = checked_calibration(
        args.calibration, args.calibration_size, quantize=args.quantize, backend=args.backend
    )
    if args.quantize is None:
        return None
    # the calibration is already read and cut to its size: passed as it is, not as the file and size again
    rm = PairRM.from_pretrained(
        args.model, **model_kwargs(args, quantize=False), quantize=args.quantize, calibration=calibration
    )
    # read from the loaded engine, not inferred from the options: what runs is what is reported
    openvino = rm.engine.openvino_backbone
    if openvino is not None:
        scheme = {"int8": "weight-only", "int8-static": "static"}.get(openvino.precision, openvino.precision)
    else:
        scheme = "dynamic" if rm.engine.reference_model is not None else None
    described = None if calibration is None else {"rows": calibration.fingerprint, "size": calibration.size}
    return {
        "device": str(rm.device),
        "backend": rm.backend,
        "quantize": {"method": args.quantize, "backend": rm.backend, "scheme": scheme, "calibration": described},
    }


def _info(args: argparse.Namespace) -> int:
    from ..checkpoints.loading import load_pairrm
    from ..utils.devices import resolve_device

    quantized = _quantized_load(args)
    loaded = load_pairrm(args.model, dtype=args.dtype, backbone_config=args.backbone_config)
    device = resolve_device(args.device)
    model = loaded.model
    data = {
        "model": args.model,
        "folder": loaded.folder,
        "layout": loaded.layout,
        "device": str(device),
        "dtype": str(args.dtype or next(model.parameters()).dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_size": model.config.hidden_size,
        "layers": model.config.num_hidden_layers,
        "n_tasks": getattr(model.config, "n_tasks", None),
        "source_max_length": loaded.lengths.source_max_length,
        "candidate_max_length": loaded.lengths.candidate_max_length,
        "vocab_size": len(loaded.tokenizer),
        "quantize": None,
    }
    if quantized is not None:
        data.update(quantized)  # int8 runs on the CPU: the device is the quantized model's
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key:>20}: {value}")
    return 0


_COMMANDS = {
    "rank": _job,
    "compare": _job,
    "score": _job,
    "label": _job,
    "merge": _merge,
    "convert": _convert,
    "info": _info,
    "serve": serve_command,
    "demo": demo_command,
    "distill": distill_command,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pairrm`` console script; returns the exit code (0 ok, 2 usage or input, 1 failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from .eval_command import eval_main

        return eval_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except _Exit as stop:
        return stop.status
    try:
        return _COMMANDS[args.command](args)
    except (InputError, ValueError, TypeError) as err:
        print(f"pairrm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pairrm {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # anything else is a failure, not a usage error
        print(f"pairrm {args.command}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1

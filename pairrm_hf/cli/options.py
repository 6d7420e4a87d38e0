"""Command-line options shared by several ``pairrm`` subcommands (file jobs, ``serve``, ``eval``, ``distill``)."""

from __future__ import annotations

import argparse

from ..models.attention import ATTENTION_IMPLEMENTATIONS
from ..utils.checks import positive_int_argument

__all__ = ["add_attention_option", "add_backend_option", "add_quantize_options", "model_kwargs", "quantize_kwargs"]


def add_attention_option(parser: argparse.ArgumentParser) -> None:
    """``--attention {fused,eager,flex}``: the self-attention path (``None``, the default: the model's own), and
    ``--packing`` (``PairRM(packing=True)``)."""
    parser.add_argument(
        "--attention",
        default=None,
        choices=ATTENTION_IMPLEMENTATIONS,
        help="self-attention path: fused (default; our tiled kernel), eager (transformers') or flex (PyTorch "
        "FlexAttention, compiled once per padded row length, cached on disk; falls back to fused where it cannot "
        "compile). Same logits to ~1e-6",
    )
    parser.add_argument(
        "--packing",
        action="store_true",
        help="run each batch's pairs packed end to end in one sequence, no padding (torch backend; meant for GPUs "
        "with --attention flex). Same logits to ~1e-6",
    )


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend {auto,torch,openvino}`` (``None``, the default: ``$PAIRRM_BACKEND``, else ``auto``)."""
    parser.add_argument(
        "--backend",
        default=None,
        choices=["auto", "torch", "openvino"],
        help="auto (default; $PAIRRM_BACKEND overrides): openvino when it is installed and the model is a fp32 PairRM "
        "on CPU (--dtype bfloat16 included: OpenVINO computes it from the fp32 weights), else torch. openvino: the "
        "backbone as an OpenVINO model on CPU, converted once and cached (needs pip install 'pairrm-hf[openvino]'); "
        "torch: the torch path",
    )


def add_quantize_options(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8``, ``--calibration FILE.jsonl`` and ``--calibration-size N`` (see ``PairRM``)."""
    parser.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="int8 on CPU: OpenVINO weight-only int8 (torch dynamic int8 with --backend torch); logits move by ~1e-2 "
        "(file jobs: part of the job's identity, so a job is never resumed at another precision)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="FILE.jsonl",
        help="with --quantize int8 on OpenVINO: static int8 calibrated on these rows ({'prompt', 'candidates'} a "
        "line, like the jobs' input); converted once and cached per calibration",
    )
    parser.add_argument(
        "--calibration-size",
        type=positive_int_argument,
        default=None,
        metavar="N",
        help="ordered pairs of the calibration rows to calibrate on (default 256)",
    )


def quantize_kwargs(args: argparse.Namespace) -> dict:
    """The ``PairRM.from_pretrained`` keywords of :func:`add_quantize_options` that were given (none by default, so
    loaders that take no quantization, e.g. a distilled student, see no new keywords)."""
    names = ("quantize", "calibration", "calibration_size")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def model_kwargs(args: argparse.Namespace, *, quantize: bool = True) -> dict:
    """The ``PairRM.from_pretrained`` keywords of a command's model options (device, dtype, batch size, backbone
    config, backend; the attention where the command has ``--attention``; with ``quantize``, those of
    :func:`quantize_kwargs`), so every command loads a model from its options the same way."""
    kwargs = {
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "backbone_config": args.backbone_config,
        "backend": args.backend,
    }
    if getattr(args, "attention", None) is not None:
        kwargs["attention"] = args.attention
    if getattr(args, "packing", False):
        kwargs["packing"] = True
    return {**kwargs, **(quantize_kwargs(args) if quantize else {})}

"""Command-line options shared by several ``pairrm`` subcommands (file jobs and ``serve``)."""

from __future__ import annotations

import argparse

from ..models.attention import ATTENTION_IMPLEMENTATIONS

__all__ = ["add_attention_option"]


def add_attention_option(parser: argparse.ArgumentParser) -> None:
    """``--attention {fused,eager,flex}``: the self-attention path (``None``, the default: the model's own)."""
    parser.add_argument(
        "--attention",
        default=None,
        choices=ATTENTION_IMPLEMENTATIONS,
        help="self-attention path: fused (default; our tiled kernel), eager (transformers') or flex (PyTorch "
        "FlexAttention, compiled once per padded row length, cached on disk; falls back to fused where it cannot "
        "compile). Same logits to ~1e-6",
    )

"""Benchmark fixtures: random-weight PairRM models of three shapes and synthetic texts of controlled token length.

Texts are made of words that the benchmark tokenizer encodes as exactly one token each, so a text of ``k`` words
is ``k`` tokens and the workloads hit the lengths they ask for. Weights are random (no network); speed does not
depend on weight values, agreement numbers from random weights only describe random models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import DebertaV2Config, DebertaV2Tokenizer

from pairrm_hf import DebertaV2PairRM, PairRM
from pairrm_hf.tokenization.tokenization_pairrm import PREFIX_TOKENS, PairEncoder

SHAPES = {
    # hidden, layers, heads, vocab (None = the tokenizer's), position buckets
    "tiny": (32, 2, 4, None, 64),
    "base": (768, 12, 12, 128005, 256),
    "large": (1024, 24, 16, 128005, 256),
}
WORKLOADS = ("short", "mixed", "long")


def build_tokenizer(folder: Path | None = None) -> DebertaV2Tokenizer:
    """A trained tiny SentencePiece tokenizer with the four PairRM prefix tokens."""
    from pairrm_hf.testing import train_spm

    folder = Path(folder or tempfile.mkdtemp(prefix="pairrm_bench_tok_"))
    train_spm(folder)
    tokenizer = DebertaV2Tokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(list(PREFIX_TOKENS))
    return tokenizer


def build_model(shape: str, tokenizer, seed: int = 0) -> DebertaV2PairRM:
    """A random-weight PairRM of the named shape (see :data:`SHAPES`)."""
    hidden, layers, heads, vocab, buckets = SHAPES[shape]
    ids = [tokenizer.get_vocab()[t] for t in PREFIX_TOKENS]
    config = DebertaV2Config(
        vocab_size=vocab or len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        relative_attention=True,
        position_buckets=buckets,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
        type_vocab_size=0,
        pad_token_id=0,
        n_tasks=1,
        drop_out=0.05,
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
        initializer_range=0.2 if shape == "tiny" else 0.02,
    )
    torch.manual_seed(seed)
    return DebertaV2PairRM(config).eval()


def nonembedding_params(model: DebertaV2PairRM) -> int:
    """Parameters multiplied once per token: the transformer layers (embeddings and the per-row head excluded)."""
    return sum(p.numel() for p in model.pretrained_model.encoder.layer.parameters())


def single_token_words(tokenizer) -> list[str]:
    """Words the benchmark tokenizer encodes as exactly one token (checked, not assumed)."""
    enc = PairEncoder(tokenizer)
    pieces = [p[1:] for p in tokenizer.get_vocab() if p.startswith("▁") and p[1:].isalpha() and len(p) > 2]
    ids = enc.tokenize(pieces)
    return sorted(w for w, i in zip(pieces, ids) if len(i) == 1)


def _lengths(rng: np.random.Generator, workload: str, count: int, kind: str) -> np.ndarray:
    if workload == "short":
        return rng.integers(15, 26, size=count)
    if workload == "long":  # over the 1224 / 412 budgets, so every row is cut to 2048 tokens
        return np.full(count, 1300 if kind == "prompt" else 500)
    if workload == "mixed":  # chat-like: log-normal, prompts 10–600 tokens, answers 5–800 tokens
        if kind == "prompt":
            return np.clip(np.round(rng.lognormal(np.log(80), 1.0, size=count)), 10, 600).astype(int)
        return np.clip(np.round(rng.lognormal(np.log(150), 0.9, size=count)), 5, 800).astype(int)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")


def make_inputs(tokenizer, workload: str, inputs: int, n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """``inputs`` prompts with ``n`` distinct candidates each, token lengths drawn per :func:`_lengths`."""
    words = np.array(single_token_words(tokenizer))
    rng = np.random.default_rng(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(words, size=int(k)))

    prompts = [text(k) for k in _lengths(rng, workload, inputs, "prompt")]
    cands = [[text(k) for k in _lengths(rng, workload, n, "answer")] for _ in range(inputs)]
    return prompts, cands


def make_ranker(model: DebertaV2PairRM, tokenizer, **engine_kwargs) -> PairRM:
    """A :class:`PairRM` on CPU/GPU around a benchmark model (torch unless ``backend=`` says otherwise)."""
    return PairRM(model, tokenizer, **{"backend": "torch", **engine_kwargs})

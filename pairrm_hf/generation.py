"""Best-of-n generation: sample n answers per prompt from a causal LM and keep the one PairRM likes best.

>>> best_of_n_generate(lm, lm_tokenizer, ["Write a haiku."], n=8, ranker="llm-blender/PairRM-hf")  # doctest: +SKIP
['...']

Fixes of upstream's ``n_generate``/``best_of_n_generate``: prompts are left-padded for decoder-only models (upstream
used the tokenizer's side), ``max_new_tokens`` defaults to 128 (upstream fell back to ``model_max_length``), the
chat template is used when the tokenizer has one, and PairRM ranks against the same prompt text the LM saw
(upstream dropped the newline between instruction and input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .validation import check_same_length, check_texts

__all__ = ["best_of_n_generate", "generate_samples", "prompt_texts", "sample_n"]


def prompt_texts(prompts: Sequence[str], instructions: Sequence[str] | None = None) -> list[str]:
    """The user text of each prompt: ``instruction + "\\n" + prompt`` when an instruction is given (as upstream)."""
    prompts = check_texts("prompts", prompts)
    if instructions is None:
        return prompts
    instructions = check_texts("instructions", instructions)
    check_same_length("prompts", prompts, instructions=instructions)
    return [f"{inst}\n{p}" if inst else p for inst, p in zip(instructions, prompts)]


def _model_inputs(tokenizer, texts: list[str], use_chat_template: bool) -> list[str]:
    if not use_chat_template:
        return texts
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ]


def sample_n(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    n: int = 5,
    instructions: Sequence[str] | None = None,
    batch_size: int = 4,
    use_chat_template: bool | None = None,
    **generate_kwargs: Any,
) -> list[list[str]]:
    """``n`` sampled completions (prompt stripped) per prompt from a causal LM.

    Defaults: ``do_sample=True``, ``temperature=0.7``, ``top_p=1.0`` (upstream's ``top_p_sampling``),
    ``max_new_tokens=128``; any ``generate`` keyword overrides them. Seed with ``torch.manual_seed`` for
    reproducible samples.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("sample_n needs a decoder-only (causal) LM; got an encoder-decoder model")
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    texts = _model_inputs(tokenizer, prompt_texts(prompts, instructions), use_chat_template)
    kwargs = {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 128, **generate_kwargs}
    # The chat template already holds any BOS, so no special tokens are added again.
    return generate_samples(model, tokenizer, texts, n=n, batch_size=batch_size,
                            add_special_tokens=not use_chat_template, **kwargs)  # fmt: skip


def generate_samples(
    model, tokenizer, texts: Sequence[str], *, n: int, batch_size: int, add_special_tokens: bool, **generate_kwargs: Any
) -> list[list[str]]:
    """``n`` generations (prompt tokens stripped, special tokens skipped) per already-rendered prompt text.

    Prompts are left-padded in batches of ``batch_size`` (decoder-only models continue from the right end of every
    row); the tokenizer's padding side and pad token are restored afterwards.
    """
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    kwargs = {**generate_kwargs, "num_return_sequences": n}
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    device = next(model.parameters()).device
    samples: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[start : start + batch_size]), add_special_tokens=add_special_tokens, padding=True,
                return_tensors="pt",
            )  # fmt: skip
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            samples += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None
    return [samples[k : k + n] for k in range(0, len(samples), n)]


def best_of_n_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    n: int = 5,
    ranker: Any = None,
    method: str = "bubble",
    instructions: Sequence[str] | None = None,
    return_all: bool = False,
    batch_size: int = 4,
    seed: int = 0,
    use_chat_template: bool | None = None,
    **sampling: Any,
) -> list[str] | list[list[str]]:
    """Sample ``n`` completions per prompt (:func:`sample_n`) and pick the best with PairRM.

    Args:
        ranker: a :class:`pairrm_hf.PairRM`, a ``pairwise-ranking`` pipeline, a checkpoint path / Hub id, or None
            for ``llm-blender/PairRM-hf``.
        method: ``"bubble"`` (one seeded pass, 2(n−1) comparisons, upstream default) or ``"full"`` (all pairs).
        return_all: return every sample per prompt, best first (see :meth:`PairRM.best_of_n`).
        sampling: ``generate`` keywords (``temperature``, ``top_p``, ``max_new_tokens``, …).

    Returns the best completion per prompt (or the ordered lists with ``return_all``).
    """
    from .fusion import as_pairrm
    from .loading import DEFAULT_MODEL

    if method not in ("bubble", "full"):
        raise ValueError(f"method must be 'bubble' or 'full', got {method!r}")
    rm = as_pairrm(DEFAULT_MODEL if ranker is None else ranker, device=next(model.parameters()).device)
    samples = sample_n(
        model, tokenizer, prompts, n=n, instructions=instructions, batch_size=batch_size,
        use_chat_template=use_chat_template, **sampling,
    )  # fmt: skip
    return rm.best_of_n(prompt_texts(prompts, instructions), samples, method=method, return_all=return_all, seed=seed)

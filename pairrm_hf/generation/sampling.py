"""Best-of-n generation: sample n answers per prompt from a causal LM and keep the one PairRM likes best.

>>> best_of_n_generate(lm, lm_tokenizer, ["Write a haiku."], n=8, ranker="llm-blender/PairRM-hf")  # doctest: +SKIP
['...']

Fixes of upstream's ``n_generate``/``best_of_n_generate``: prompts are left-padded for decoder-only models (upstream
used the tokenizer's side), ``max_new_tokens`` defaults to 128 (upstream fell back to ``model_max_length``), the
chat template is used when the tokenizer has one and the prompt does not carry it already (see
:func:`has_chat_template_prefix`), and PairRM ranks against the same prompt text the LM saw (upstream dropped the
newline between instruction and input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..utils.checks import check_positive_int, check_same_length, check_texts

__all__ = [
    "best_of_n_generate",
    "generate_samples",
    "has_chat_template_prefix",
    "model_prompt_texts",
    "prompt_texts",
    "sample_n",
]

#: Generation defaults of upstream's ``sampling_mode`` values (``None``: the caller's keywords only).
SAMPLING_MODES = {
    "top_p_sampling": {"do_sample": True, "top_p": 1.0, "temperature": 0.7},
    "top_k_sampling": {"do_sample": True, "top_k": 50, "temperature": 0.7},
    None: {},
}
_CONTENT_SENTINEL = "PAIRRM_CONTENT_7f3a9c"  # a text no template alters


def prompt_texts(prompts: Sequence[str], instructions: Sequence[str] | None = None) -> list[str]:
    """The user text of each prompt: ``instruction + "\\n" + prompt`` when an instruction is given (as upstream)."""
    prompts = check_texts("prompts", prompts)
    if instructions is None:
        return prompts
    instructions = check_texts("instructions", instructions)
    check_same_length("prompts", prompts, instructions=instructions)
    return [f"{inst}\n{p}" if inst else p for inst, p in zip(instructions, prompts)]


def _turn_prefixes(tokenizer) -> list[str]:
    """What the chat template renders before the first message's content, for a user or a system first message."""
    prefixes = []
    for role in ("user", "system"):
        try:
            text = tokenizer.apply_chat_template([{"role": role, "content": _CONTENT_SENTINEL}], tokenize=False)
        except Exception:  # templates may refuse a role (no system turns) or a lone system message
            continue
        head = text.split(_CONTENT_SENTINEL, 1)[0] if _CONTENT_SENTINEL in text else ""
        if head.strip():  # a template that renders nothing first cannot be recognised
            prefixes.append(head)
    return prefixes


def has_chat_template_prefix(tokenizer, prompt: str) -> bool:
    """Whether ``prompt`` was already rendered with ``tokenizer``'s chat template.

    True when the prompt starts with what the template renders before the first message's content, for a first
    message from the user or from the system (e.g. ``"<|im_start|>user\\n"``, ``"<s>[INST] "``). False when the
    tokenizer has no chat template, or its template renders nothing before the content.
    """
    if not getattr(tokenizer, "chat_template", None):
        return False
    return any(prompt.startswith(head) for head in _turn_prefixes(tokenizer))


def model_prompt_texts(tokenizer, texts: list[str], use_chat_template: bool | str) -> tuple[list[str], bool]:
    """The prompt texts the LM sees (each wrapped in the chat template when ``use_chat_template`` asks for it and
    it is not rendered already), and whether the tokenizer must add its special tokens to them."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is False or (use_chat_template == "auto" and not has_template):
        return texts, True
    if not has_template:
        raise ValueError("use_chat_template=True but the tokenizer has no chat template; pass False or 'auto'")
    prefixes = _turn_prefixes(tokenizer) if use_chat_template == "auto" else []
    # A rendered template already holds any BOS it wants, so no special tokens are added to any row.
    return [
        t
        if any(t.startswith(h) for h in prefixes)
        else tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ], False


def sample_n(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    n: int = 5,
    instructions: Sequence[str] | None = None,
    batch_size: int = 4,
    use_chat_template: bool | str | None = "auto",
    sampling_mode: str | None = "top_p_sampling",
    **generate_kwargs: Any,
) -> list[list[str]]:
    """``n`` sampled completions (prompt stripped) per prompt from a causal LM.

    Args:
        use_chat_template: ``"auto"`` (default; ``None`` means the same): wrap each prompt as one user turn when
            the tokenizer has a chat template, except prompts that already carry it (:func:`has_chat_template_prefix`),
            which are used as given. ``True``: always wrap; ``False``: never (the prompt text as given, with the
            tokenizer's special tokens, as upstream).
        sampling_mode: upstream's ``"top_p_sampling"`` (``do_sample=True``, ``top_p=1.0``, ``temperature=0.7``),
            ``"top_k_sampling"`` (``top_k=50``, ``temperature=0.7``) or ``None`` (the caller's keywords only).

    ``max_new_tokens`` defaults to 128; any ``generate`` keyword overrides the defaults. Seed with
    ``torch.manual_seed`` for reproducible samples.
    """
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("sample_n needs a decoder-only (causal) LM; got an encoder-decoder model")
    if use_chat_template is None:
        use_chat_template = "auto"
    if use_chat_template not in (True, False, "auto"):
        raise ValueError(f"use_chat_template must be True, False or 'auto', got {use_chat_template!r}")
    if use_chat_template != "auto":
        use_chat_template = bool(use_chat_template)  # 0/1 behave as False/True
    if sampling_mode not in SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {list(SAMPLING_MODES)}, got {sampling_mode!r}")
    texts, add_special_tokens = model_prompt_texts(tokenizer, prompt_texts(prompts, instructions), use_chat_template)
    kwargs = {**SAMPLING_MODES[sampling_mode], "max_new_tokens": 128, **generate_kwargs}
    return generate_samples(
        model, tokenizer, texts, n=n, batch_size=batch_size, add_special_tokens=add_special_tokens, **kwargs
    )


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
                list(texts[start : start + batch_size]),
                add_special_tokens=add_special_tokens,
                padding=True,
                return_tensors="pt",
            )
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
    use_chat_template: bool | str | None = "auto",
    **sampling: Any,
) -> list[str] | list[list[str]]:
    """Sample ``n`` completions per prompt (:func:`sample_n`) and pick the best with PairRM.

    PairRM's source is the prompt text as given (with ``instruction + "\\n"`` before it), so a prompt that already
    carries the chat template is ranked with its template markup, as upstream ranked it.

    Args:
        ranker: a :class:`pairrm_hf.PairRM`, a ``pairwise-ranking`` pipeline, a checkpoint path / Hub id, or None
            for ``llm-blender/PairRM-hf``.
        method: ``"bubble"`` (one seeded pass, 2(n−1) comparisons, upstream default) or ``"full"`` (all pairs).
        return_all: return every sample per prompt, best first (see :meth:`PairRM.best_of_n`).
        use_chat_template: ``"auto"``, ``True`` or ``False``, as in :func:`sample_n`.
        sampling: ``sampling_mode`` and ``generate`` keywords (``temperature``, ``top_p``, ``max_new_tokens``, …).

    Returns the best completion per prompt (or the ordered lists with ``return_all``).
    """
    from ..checkpoints.loading import DEFAULT_MODEL
    from .fusion import as_pairrm

    if method not in ("bubble", "full"):
        raise ValueError(f"method must be 'bubble' or 'full', got {method!r}")
    rm = as_pairrm(DEFAULT_MODEL if ranker is None else ranker, device=next(model.parameters()).device)
    samples = sample_n(
        model,
        tokenizer,
        prompts,
        n=n,
        instructions=instructions,
        batch_size=batch_size,
        use_chat_template=use_chat_template,
        **sampling,
    )
    return rm.best_of_n(prompt_texts(prompts, instructions), samples, method=method, return_all=return_all, seed=seed)

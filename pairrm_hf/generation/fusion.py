"""Generative fusion: build GenFuser inputs exactly as upstream and generate fused answers.

Two kinds of fuser are supported:

* **seq2seq** (``llm-blender/gen_fuser_3b``, any Flan-T5): the input is upstream's ``GenFuserDataset`` text
  ``Instruction: …</s>Input: …</s>Candidate 0: <extra_id_0>:…</s>…</s>Summarize candidates into a better one for
  the given instruction:``, each candidate cut to ``candidate_maxlength`` tokens (plus ``"..."``), tokenized
  with ``add_special_tokens=False`` and right-truncated to ``max_length`` tokens.
* **causal** chat LMs: :data:`AGGREGATOR_TEMPLATE` rendered as one user message through the tokenizer's chat
  template, left-padded, and the prompt stripped from the output.

Fixed upstream bugs: the caller's candidate lists are never modified (upstream truncated them in place), and
``num_return_sequences > 1`` gives one list per input instead of a flattened list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..utils.checks import check_candidate_lists, check_positive_int, check_same_length, check_texts, check_top_k

__all__ = [
    "AGGREGATOR_TEMPLATE",
    "FUSER_SUFFIX",
    "aggregator_prompt",
    "as_pairrm",
    "rank_top_k",
    "build_fuser_text",
    "fuser_texts",
    "fuse_generate",
    "is_seq2seq",
    "load_fuser",
    "prepare_fuser_tokenizer",
    "truncate_candidates",
]

#: The trailing instruction upstream appends to every GenFuser input.
FUSER_SUFFIX = "</s>Summarize candidates into a better one for the given instruction:"
#: Upstream defaults: ``GenFuserConfig.candidate_maxlength`` / ``max_length`` and ``Blender.fuse``'s beam count.
CANDIDATE_MAXLENGTH = 128
MAX_LENGTH = 1024
DEFAULT_NUM_BEAMS = 4

#: Prompt for causal chat LMs used as fusers (our own; upstream only had the seq2seq GenFuser).
AGGREGATOR_TEMPLATE = (
    "You are given an instruction, an input and several candidate responses written by other assistants.\n"
    "Combine their strengths and fix their mistakes to write one response that is better than each of them.\n"
    "Reply with the improved response only.\n\n"
    "Instruction: {instruction}\n"
    "Input: {input}\n\n"
    "{candidates}"
)


def is_seq2seq(model: Any) -> bool:
    """True for encoder-decoder fusers (GenFuser / T5), False for causal LMs."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def truncate_candidates(
    tokenizer, candidates: Sequence[str], max_tokens: int | None = CANDIDATE_MAXLENGTH
) -> list[str]:
    """A new list: each candidate longer than ``max_tokens`` tokens cut to them, decoded, with ``"..."`` appended."""
    if max_tokens is None:
        return list(candidates)
    out = []
    for text in candidates:
        ids = tokenizer.encode(text, add_special_tokens=False)
        out.append(tokenizer.decode(ids[:max_tokens]) + "..." if len(ids) > max_tokens else text)
    return out


def build_fuser_text(input: str, candidates: Sequence[str], instruction: str | None = None) -> str:
    """Upstream's GenFuser text for already-truncated candidates (``"Instruction: "`` is kept when empty)."""
    parts = "</s>".join(f"Candidate {i}: <extra_id_{i}>:{c}" for i, c in enumerate(candidates))
    return "</s>".join(["Instruction: " + (instruction or ""), "Input: " + input, parts]) + FUSER_SUFFIX


def aggregator_prompt(input: str, candidates: Sequence[str], instruction: str | None = None) -> str:
    """The user message that asks a causal chat LM to fuse ``candidates`` (see :data:`AGGREGATOR_TEMPLATE`)."""
    blocks = "\n\n".join(f"Candidate {i + 1}:\n{c}" for i, c in enumerate(candidates))
    return AGGREGATOR_TEMPLATE.format(instruction=instruction or "", input=input, candidates=blocks)


def _check_fuse_args(inputs, candidates, instructions):
    inputs = check_texts("inputs", inputs)
    candidates = check_candidate_lists("candidates", candidates)
    check_same_length("inputs", inputs, candidates=candidates)
    if instructions is not None:
        instructions = check_texts("instructions", instructions)
        check_same_length("inputs", inputs, instructions=instructions)
    return inputs, candidates, instructions


def fuser_texts(
    tokenizer,
    inputs: Sequence[str],
    candidates: Sequence[Sequence[str]],
    instructions: Sequence[str] | None = None,
    *,
    seq2seq: bool = True,
    candidate_maxlength: int | None = CANDIDATE_MAXLENGTH,
) -> list[str]:
    """The prompt text of each input: GenFuser text (``seq2seq``) or the chat-templated aggregator prompt."""
    inputs, candidates, instructions = _check_fuse_args(inputs, candidates, instructions)
    texts = []
    for k, (source, cands) in enumerate(zip(inputs, candidates)):
        instruction = None if instructions is None else instructions[k]
        cands = truncate_candidates(tokenizer, cands, candidate_maxlength)
        if seq2seq:
            texts.append(build_fuser_text(source, cands, instruction))
            continue
        message = aggregator_prompt(source, cands, instruction)
        if getattr(tokenizer, "chat_template", None):
            texts.append(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
                )
            )
        else:
            texts.append(message + "\n\nImproved response:")
    return texts


def prepare_fuser_tokenizer(tokenizer, model) -> None:
    """Causal LMs generate after the prompt, so batches are padded on the left; a pad token is borrowed from EOS."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if not is_seq2seq(model):
        tokenizer.padding_side = "left"


def default_generate_kwargs(model, tokenizer, candidate_maxlength: int | None) -> dict[str, Any]:
    """Upstream ``Blender.fuse`` defaults (``num_beams=4``, ``max_new_tokens=candidate_maxlength``) plus a pad id."""
    kwargs: dict[str, Any] = {"max_new_tokens": candidate_maxlength or CANDIDATE_MAXLENGTH}
    if is_seq2seq(model):
        kwargs["num_beams"] = DEFAULT_NUM_BEAMS
    if tokenizer.pad_token_id is not None and getattr(model.generation_config, "pad_token_id", None) is None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    return kwargs


def fuse_generate(
    model,
    tokenizer,
    inputs: Sequence[str],
    candidates: Sequence[Sequence[str]],
    instructions: Sequence[str] | None = None,
    *,
    batch_size: int = 4,
    candidate_maxlength: int | None = CANDIDATE_MAXLENGTH,
    max_length: int = MAX_LENGTH,
    **generate_kwargs,
) -> list[str] | list[list[str]]:
    """Fuse each input's candidates into one answer with a seq2seq GenFuser or a causal chat LM.

    ``generate_kwargs`` override the defaults (``num_beams=4`` for seq2seq, ``max_new_tokens=candidate_maxlength``).
    Returns one str per input, or one list of ``num_return_sequences`` str per input when that is > 1.
    """
    check_positive_int("batch_size", batch_size)
    seq2seq = is_seq2seq(model)
    prepare_fuser_tokenizer(tokenizer, model)
    texts = fuser_texts(
        tokenizer, inputs, candidates, instructions, seq2seq=seq2seq, candidate_maxlength=candidate_maxlength
    )
    kwargs = {**default_generate_kwargs(model, tokenizer, candidate_maxlength), **generate_kwargs}
    per_input = int(kwargs.get("num_return_sequences", 1) or 1)
    device = next(model.parameters()).device
    outputs: list[str] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            generated = model.generate(**enc, **kwargs)
        if not seq2seq:
            generated = generated[:, enc["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(generated, skip_special_tokens=True)
    if per_input == 1:
        return outputs
    return [outputs[k : k + per_input] for k in range(0, len(outputs), per_input)]


def load_fuser(
    name_or_path: str | os.PathLike = "llm-blender/gen_fuser_3b",
    *,
    device: str | int | torch.device | None = None,
    dtype: str | torch.dtype | None = "bfloat16",
):
    """Load a fuser (seq2seq first, then causal LM) and its tokenizer; returns ``(model, tokenizer)``.

    ``dtype`` defaults to bfloat16 as upstream's ``GenFuserConfig``; pass ``"float32"`` for exact CPU results.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from ..utils.devices import resolve_device, resolve_dtype

    name = os.fspath(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    config = AutoConfig.from_pretrained(name)
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = cls.from_pretrained(name, dtype=torch_dtype if torch_dtype is not None else "auto")
    model.to(resolve_device(device)).eval()
    tokenizer = AutoTokenizer.from_pretrained(name)
    prepare_fuser_tokenizer(tokenizer, model)
    return model, tokenizer


def as_pairrm(ranker: Any, device: str | int | torch.device | None = None):
    """A :class:`PairRM` from a ``PairRM``, a ``pairwise-ranking`` pipeline, or a checkpoint path / Hub id."""
    from ..ranking.ranker import PairRM

    if isinstance(ranker, PairRM):
        return ranker
    if isinstance(getattr(ranker, "ranker", None), PairRM):  # a PairwiseRankingPipeline or a Blender
        return ranker.ranker
    if isinstance(ranker, (str, os.PathLike)):
        return PairRM.from_pretrained(ranker, device=device)
    raise TypeError(
        f"ranker must be a PairRM, a pairwise-ranking pipeline or a checkpoint path, got {type(ranker).__name__}"
    )


def rank_top_k(
    ranker,
    inputs: Sequence[str],
    candidates: Sequence[Sequence[str]],
    instructions: Sequence[str] | None = None,
    top_k: int = 3,
):
    """Rank with PairRM (``max_logits``) and keep each input's best ``top_k`` candidates, best first.

    Returns ``(top_candidates, rankings)``; ``top_k`` larger than an input's candidate count is an error.
    """
    check_positive_int("top_k", top_k)
    check_top_k(top_k)
    inputs, candidates, instructions = _check_fuse_args(inputs, candidates, instructions)
    for k, cands in enumerate(candidates):
        check_top_k(top_k, len(cands), candidates_name=f"candidates[{k}]")
    rankings = ranker.rank_batch(inputs, candidates, instructions=instructions)
    from ..ranking.aggregation import topk_indices

    top = [[cands[i] for i in topk_indices(r.ranks, top_k)] for r, cands in zip(rankings, candidates)]
    return top, rankings

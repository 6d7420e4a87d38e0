"""Generate candidate answers from several Hugging Face causal LMs into the MixInstruct schema, resumably.

Each model is loaded once and generates for every pending prompt in left-padded batches. Progress is kept in
``<output>.parts/<model>.jsonl`` (one ``{"id", "text"}`` line per finished prompt); once every model has answered a
prompt, its full :class:`~pairrm_hf.data.mixinstruct.MixInstructExample` is appended to ``output`` as one line
(written, flushed and fsynced in one call). A rerun skips ids already in ``output`` and, per model, ids already in
its part file; a torn last line left by a crash is ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.mixinstruct import Candidate, MixInstructExample, read_jsonl
from ..utils.checks import check_positive_int

__all__ = ["generate_candidates"]


def _append_line(path: str, obj: Mapping[str, Any]) -> None:
    # One write of a whole line, then fsync: a crash leaves at most one torn last line, which readers skip.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _done_ids(path: str) -> dict[str, dict]:
    return {str(r["id"]): r for r in read_jsonl(path)} if os.path.isfile(path) else {}


def _as_examples(prompts: Sequence[Any]) -> list[MixInstructExample]:
    out, seen = [], set()
    for k, p in enumerate(prompts):
        if isinstance(p, str):
            ex = MixInstructExample(id=str(k), input=p)
        elif isinstance(p, MixInstructExample):
            ex = MixInstructExample(p.id, p.instruction, p.input, p.output, [])
        elif isinstance(p, Mapping):
            ex = MixInstructExample.from_dict({**p, "candidates": []}, k)
            if "id" not in p:
                ex.id = str(k)
        else:
            raise TypeError(f"prompts[{k}] must be a str, a mapping or a MixInstructExample, got {type(p).__name__}")
        if ex.id in seen:
            raise ValueError(f"prompts[{k}] repeats id {ex.id!r}; ids must be unique for resuming")
        seen.add(ex.id)
        out.append(ex)
    return out


def _generate(
    model_name: str,
    texts: list[str],
    batch_size: int,
    max_new_tokens: int,
    device: Any,
    generation_kwargs: Mapping[str, Any],
    use_chat_template: bool,
):
    """Yield one decoded answer per text, in order, from ``model_name``.

    One batch at a time (so finished answers can be saved before the next batch) through
    :func:`pairrm_hf.generation.sampling.generate_samples`, the package's one generate loop (left padding, prompt stripped).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .sampling import generate_samples, model_prompt_texts

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    texts, add_special_tokens = model_prompt_texts(tokenizer, list(texts), "auto" if use_chat_template else False)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **generation_kwargs}
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        for (answer,) in generate_samples(
            model, tokenizer, batch, n=1, batch_size=batch_size, add_special_tokens=add_special_tokens, **kwargs
        ):
            yield answer
    del model


def generate_candidates(
    prompts: Sequence[Any],
    models: Sequence[str],
    output: str | os.PathLike,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    device: Any = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    decoding_method: str = "greedy",
    use_chat_template: bool = True,
) -> list[MixInstructExample]:
    """Generate one candidate per model for each prompt and append finished examples to ``output`` (JSONL).

    Args:
        prompts: strings (ids are their positions), MixInstruct-style mappings or :class:`MixInstructExample`
            (the model sees ``instruction + input``).
        models: causal LM folders or Hub ids; each becomes ``Candidate.model``.
        generation_kwargs: extra ``generate`` arguments (default greedy); ``decoding_method`` labels them.
        use_chat_template: wrap each prompt as one user turn when the tokenizer has a chat template.
    Returns every example in ``output`` (including ones from earlier runs), in ``prompts`` order.
    """
    if not models or any(not isinstance(m, str) for m in models):
        raise ValueError(f"models must be a non-empty list of model names/folders, got {models!r}")
    check_positive_int("batch_size", batch_size)
    examples = _as_examples(prompts)
    output = os.fspath(output)
    parts = output + ".parts"
    os.makedirs(parts, exist_ok=True)
    finished = _done_ids(output)
    pending = [ex for ex in examples if ex.id not in finished]
    answers: dict[str, dict[str, str]] = {}
    for name in models:
        part = os.path.join(parts, re.sub(r"[^A-Za-z0-9._-]+", "__", name) + ".jsonl")
        done = {k: r["text"] for k, r in _done_ids(part).items()}
        todo = [ex for ex in pending if ex.id not in done]
        if todo:
            texts = _generate(
                name,
                [ex.source for ex in todo],
                batch_size,
                max_new_tokens,
                device,
                dict(generation_kwargs or {}),
                use_chat_template,
            )
            for ex, text in zip(todo, texts):
                _append_line(part, {"id": ex.id, "text": text})
                done[ex.id] = text
        answers[name] = done
    for ex in pending:
        ex.candidates = [Candidate(answers[m][ex.id], m, decoding_method) for m in models]
        _append_line(output, ex.to_dict())
        finished[ex.id] = ex.to_dict()
    return [MixInstructExample.from_dict(finished[ex.id]) for ex in examples]

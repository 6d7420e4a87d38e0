"""Turn the input forms the pipelines accept into ``RankItem`` s (source text, candidate texts, extras)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..inputs import conversation_texts
from ..validation import check_texts

__all__ = ["RankItem", "normalize_fuse_inputs", "normalize_inputs"]

_ITEM_KEYS = {"prompt", "candidates", "instruction", "reference", "conversations"}


@dataclass
class RankItem:
    """One input: PairRM texts plus the caller's original candidates (returned in the output)."""

    source: str
    texts: list[str]
    originals: list[Any]
    instruction: str | None = None
    reference: str | None = None
    prompt: Any = None


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _is_message(value: Any) -> bool:
    return isinstance(value, Mapping) and "role" in value and "content" in value


def _is_messages(value: Any) -> bool:
    return _is_seq(value) and len(value) > 0 and all(_is_message(m) for m in value)


def _candidate_messages(name: str, cand: Any) -> list[Mapping]:
    if isinstance(cand, str):
        return [{"role": "assistant", "content": cand}]
    if _is_message(cand):
        return [cand]
    if _is_messages(cand):
        return list(cand)
    raise TypeError(f"{name} must be a str, an assistant message or a list of messages, got {type(cand).__name__}")


def _merge(prompt: list[Mapping], answer: list[Mapping]) -> list[Mapping]:
    """One conversation from the prompt messages and one candidate's assistant messages.

    ``[user1, user2]`` + ``[a1, a2]`` interleave (the candidate answered every turn); otherwise the candidate's
    messages follow the prompt (``[user1, a1, user2]`` + ``[a2]``).
    """
    if len(prompt) > 1 and len(prompt) == len(answer) and all(str(m["role"]).lower() == "user" for m in prompt):
        return [m for pair in zip(prompt, answer) for m in pair]
    return [*prompt, *answer]


def _conversation_item(name: str, conversations: Any, prompt: Any = None) -> RankItem:
    if not _is_seq(conversations) or not conversations:
        raise ValueError(f"{name} must be a non-empty list of conversations (lists of role/content messages)")
    sources, texts = [], []
    for k, conv in enumerate(conversations):
        source, text = conversation_texts(conv, f"{name}[{k}]")
        sources.append(source)
        texts.append(text)
    for k, source in enumerate(sources[1:], start=1):
        if source != sources[0]:
            raise ValueError(
                f"{name}[{k}] has different user turns from {name}[0]; candidates must answer the same prompt"
            )
    return RankItem(sources[0], texts, list(conversations), prompt=prompt)


def _candidate_list(name: str, candidates: Any) -> list:
    """The candidates of input ``name`` as a new non-empty list (their items are checked by the caller)."""
    if candidates is None:
        raise ValueError(f"{name}: candidates are missing; call pipe(prompt, candidates) or pass a dict")
    if not _is_seq(candidates):
        raise TypeError(f"{name} candidates must be a list, got {type(candidates).__name__}")
    if not candidates:
        raise ValueError(f"{name} candidates is empty: pass at least one candidate")
    return list(candidates)


def _item(name: str, value: Any, candidates: Any = None) -> RankItem:
    if isinstance(value, Mapping) and not _is_message(value):
        unknown = set(value) - _ITEM_KEYS
        if unknown:
            raise ValueError(f"{name} has unknown keys {sorted(unknown)}; expected some of {sorted(_ITEM_KEYS)}")
        if "conversations" in value:
            item = _conversation_item(f"{name}['conversations']", value["conversations"])
        else:
            if "prompt" not in value:
                raise ValueError(f"{name} is missing 'prompt' (expected {{'prompt': str, 'candidates': [str, ...]}})")
            if "candidates" not in value:
                raise ValueError(
                    f"{name} is missing 'candidates' (expected {{'prompt': str, 'candidates': [str, ...]}})"
                )
            item = _item(name, value["prompt"], value["candidates"])
        for key in ("instruction", "reference"):
            if value.get(key) is not None:
                if not isinstance(value[key], str):
                    raise TypeError(f"{name}['{key}'] must be a str, got {type(value[key]).__name__}")
                setattr(item, key, value[key])
        return item
    candidates = _candidate_list(name, candidates)
    if isinstance(value, str):
        texts = check_texts(f"{name} candidates", candidates)
        return RankItem(value, texts, list(texts), prompt=value)
    if _is_messages(value):
        convs = [
            _merge(list(value), _candidate_messages(f"{name} candidates[{k}]", c)) for k, c in enumerate(candidates)
        ]
        item = _conversation_item(f"{name} conversations", convs, prompt=value)
        item.originals = list(candidates)
        return item
    raise TypeError(f"{name} prompt must be a str or a list of chat messages, got {type(value).__name__}")


def _normalize(
    inputs: Any, candidates: Any, make_item: Callable, is_single: Callable[[Any], bool], conversations: bool
) -> tuple[list, bool]:
    """The input forms both pipelines share: one prompt, a dict, or a list (zipped with ``candidates`` if given).

    With ``conversations``, a list whose items are all conversations is one input whose candidates they are.
    """
    if is_single(inputs):
        return [make_item("inputs", inputs, candidates)], True
    if isinstance(inputs, Mapping):
        if candidates is not None:
            raise ValueError("pass candidates inside the dict or as the second argument, not both")
        return [make_item("inputs", inputs)], True
    if not _is_seq(inputs):
        raise TypeError(f"inputs must be a str, a dict or a list, got {type(inputs).__name__}")
    if not inputs:
        raise ValueError("inputs is empty: pass at least one prompt")
    if conversations and all(_is_messages(conv) for conv in inputs):
        if candidates is not None:
            raise ValueError("a list of conversations already holds the candidates; do not pass candidates")
        return [_conversation_item("inputs", inputs)], True
    if candidates is not None:
        if not _is_seq(candidates) or len(candidates) != len(inputs):
            got = len(candidates) if _is_seq(candidates) else type(candidates).__name__
            raise ValueError(f"with a list of prompts, candidates must be a list of {len(inputs)} lists, got {got}")
        return [make_item(f"inputs[{k}]", p, c) for k, (p, c) in enumerate(zip(inputs, candidates))], False
    return [make_item(f"inputs[{k}]", x) for k, x in enumerate(inputs)], False


def normalize_inputs(inputs: Any, candidates: Any = None) -> tuple[list[RankItem], bool]:
    """Items and whether the call was a single input (so the pipeline returns one result, not a list).

    Forms: ``(prompt, candidates)``; ``([prompts], [candidate lists])``; a dict; a list of dicts; one list of
    conversations (each a list of messages) sharing their user turns; a dict ``{"conversations": [...]}``.
    """
    return _normalize(inputs, candidates, _item, lambda x: isinstance(x, str) or _is_messages(x), conversations=True)


_FUSE_KEYS = {"prompt", "input", "candidates", "instruction"}


def _fuse_item(name: str, value: Any, candidates: Any = None) -> dict:
    if isinstance(value, Mapping):
        unknown = set(value) - _FUSE_KEYS
        if unknown:
            raise ValueError(f"{name} has unknown keys {sorted(unknown)}; expected some of {sorted(_FUSE_KEYS)}")
        prompt = value.get("prompt", value.get("input"))
        if prompt is None:
            raise ValueError(f"{name} is missing 'prompt' (expected {{'prompt': str, 'candidates': [str, ...]}})")
        if "candidates" not in value:
            raise ValueError(f"{name} is missing 'candidates' (expected {{'prompt': str, 'candidates': [str, ...]}})")
        item = _fuse_item(name, prompt, value["candidates"])
        if value.get("instruction") is not None:
            if not isinstance(value["instruction"], str):
                raise TypeError(f"{name}['instruction'] must be a str, got {type(value['instruction']).__name__}")
            item["instruction"] = value["instruction"]
        return item
    if not isinstance(value, str):
        raise TypeError(f"{name} prompt must be a str, got {type(value).__name__}")
    texts = check_texts(f"{name} candidates", _candidate_list(name, candidates))
    return {"prompt": value, "candidates": texts, "instruction": None}


def normalize_fuse_inputs(inputs: Any, candidates: Any = None) -> tuple[list[dict], bool]:
    """``[{"prompt", "candidates", "instruction"}]`` (new lists, never the caller's) and whether it was one input."""
    return _normalize(inputs, candidates, _fuse_item, lambda x: isinstance(x, str), conversations=False)

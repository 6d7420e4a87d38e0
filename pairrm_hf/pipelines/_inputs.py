"""How the pipelines read their arguments: the call form (one input, a list, a stream) and each input's fields.

Texts are made only by :mod:`pairrm_hf.ranking.inputs` (the one input rule); this module only finds the prompt, the
candidates and the optional fields of each input, and names the input in errors (``inputs[3]``).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ranking.inputs import answer_set_texts, is_messages
from ..utils.checks import check_list, check_texts

__all__ = [
    "NamedInput",
    "RankItem",
    "FuseItem",
    "CallForm",
    "call_form",
    "rank_item",
    "fuse_item",
]

_RANK_KEYS = {"prompt", "candidates", "instruction", "reference", "conversations"}
_FUSE_KEYS = {"prompt", "input", "candidates", "instruction"}


@dataclass(frozen=True)
class NamedInput:
    """One input of a list or a stream with the name errors use for it (``inputs[3]``)."""

    name: str
    value: Any


@dataclass
class RankItem:
    """One ranking input as PairRM texts, plus the caller's candidates (returned in the output).

    ``reference`` is the PairRM text of an explicit reference answer (a ``"reference"`` key), made by the same rule.
    """

    source: str
    texts: list[str]
    originals: list[Any]
    reference: str | None = None
    name: str = "inputs"


@dataclass
class FuseItem:
    """One fusion input: the fuser's prompt and candidates (plain str) and PairRM's texts for ranking them."""

    prompt: str
    candidates: list[str]
    instruction: str | None
    source: str
    texts: list[str] = field(default_factory=list)
    name: str = "inputs"


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _is_stream(value: Any) -> bool:
    """Generators, iterators and datasets (``datasets.Dataset``, torch datasets such as ``KeyDataset``) stream."""
    if isinstance(value, (types.GeneratorType, Iterator)):
        return True
    try:
        from torch.utils.data import Dataset as TorchDataset

        if isinstance(value, TorchDataset):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import datasets

        return isinstance(value, (datasets.Dataset, datasets.IterableDataset))
    except ImportError:
        return False


class _NamedSequence(Sequence):
    """A sized, indexable view that names each item (``datasets.Dataset`` and ``KeyDataset`` stay random access)."""

    def __init__(self, data: Any):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, k):
        return NamedInput(f"inputs[{k}]", self.data[k])


def _named_stream(values: Iterable, candidates: Iterable | None) -> Iterator[NamedInput]:
    if candidates is None:
        for k, value in enumerate(values):
            yield NamedInput(f"inputs[{k}]", value)
        return
    cands = iter(candidates)
    k = -1
    for k, value in enumerate(values):
        try:
            cand = next(cands)
        except StopIteration:
            raise ValueError(f"candidates ran out at inputs[{k}]: pass one candidate list per prompt") from None
        yield NamedInput(f"inputs[{k}]", {"prompt": value, "candidates": cand})
    if next(cands, _END) is not _END:
        raise ValueError(f"candidates has more items than the {k + 1} prompts; pass one candidate list per prompt")


_END = object()


@dataclass(frozen=True)
class CallForm:
    """What a call passed: ``kind`` is ``"single"`` (return one result), ``"list"`` (return a list) or ``"stream"``
    (return an iterator); ``data`` is the input, or a sequence/iterable of :class:`NamedInput`."""

    kind: str
    data: Any


def call_form(inputs: Any, candidates: Any, *, single: Any, conversations: bool) -> CallForm:
    """Sort a call's arguments into one input, a list or a stream.

    Args:
        inputs, candidates: the call's first two arguments (``pipe(inputs, candidates)``).
        single: a predicate for a prompt that takes the ``candidates`` argument (one input).
        conversations: a list whose items are all chats is one input (its candidates are the chats).
    """
    if single(inputs):
        return CallForm("single", {"prompt": inputs, "candidates": _candidates_arg(candidates)})
    if isinstance(inputs, Mapping):
        if candidates is not None:
            raise ValueError("pass candidates inside the dict or as the second argument, not both")
        return CallForm("single", inputs)
    if _is_stream(inputs):
        if candidates is None and hasattr(inputs, "__getitem__"):
            try:  # datasets.Dataset, KeyDataset: sized and indexable, so DataLoader workers can share them
                len(inputs)
                return CallForm("stream", _NamedSequence(inputs))
            except TypeError:  # an iterable dataset without a length
                pass
        return CallForm("stream", _named_stream(inputs, candidates))
    if not _is_seq(inputs):
        raise TypeError(
            "inputs must be a prompt (str or chat messages), a dict, a list of them, a generator or a dataset, "
            f"got {type(inputs).__name__}"
        )
    if not inputs:
        raise ValueError("inputs is empty: pass at least one prompt")
    if conversations and all(is_messages(conv) for conv in inputs):
        if candidates is not None:
            raise ValueError("a list of conversations already holds the candidates; do not pass candidates")
        return CallForm("single", {"conversations": list(inputs)})
    if candidates is not None:
        if not _is_seq(candidates) or len(candidates) != len(inputs):
            got = len(candidates) if _is_seq(candidates) else type(candidates).__name__
            raise ValueError(f"with a list of prompts, candidates must be a list of {len(inputs)} lists, got {got}")
        return CallForm(
            "list",
            [
                NamedInput(f"inputs[{k}]", {"prompt": p, "candidates": c})
                for k, (p, c) in enumerate(zip(inputs, candidates))
            ],
        )
    return CallForm("list", _NamedSequence(list(inputs)))


def _candidates_arg(candidates: Any) -> Any:
    if candidates is None:
        raise ValueError("inputs: candidates are missing; call pipe(prompt, candidates) or pass a dict")
    return candidates


def _unpack(input_: Any) -> tuple[str, Any]:
    return (input_.name, input_.value) if isinstance(input_, NamedInput) else ("inputs", input_)


def _candidate_list(name: str, candidates: Any) -> list:
    candidates = check_list(f"{name} candidates", candidates)
    if not candidates:
        raise ValueError(f"{name} candidates is empty: pass at least one candidate")
    return list(candidates)


def _optional_str(name: str, row: Mapping, key: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name}['{key}'] must be a str, got {type(value).__name__}")
    return value


def _fields(name: str, value: Any, keys: set[str], prompt_keys: tuple[str, ...]) -> tuple[Any, list, Mapping]:
    """``(prompt, candidates, row)`` of one input given as a dict, or a list of conversations (prompt None)."""
    if _is_seq(value) and value and all(is_messages(c) for c in value):
        return None, list(value), {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a dict {{'prompt': ..., 'candidates': [...]}} or a list of conversations, "
            f"got {type(value).__name__}"
        )
    unknown = set(value) - keys
    if unknown:
        raise ValueError(
            f"{name} has unknown keys {sorted(unknown)}; expected some of {sorted(keys)} "
            "(for a dataset with more columns use ds.select_columns([...]))"
        )
    if "conversations" in keys and "conversations" in value:
        convs = value["conversations"]
        if not _is_seq(convs) or not convs:
            raise ValueError(f"{name}['conversations'] must be a non-empty list of conversations")
        return None, list(convs), value
    prompt = next((value[k] for k in prompt_keys if value.get(k) is not None), None)
    if prompt is None:
        raise ValueError(f"{name} is missing 'prompt' (expected {{'prompt': str, 'candidates': [str, ...]}})")
    if value.get("candidates") is None:
        raise ValueError(f"{name} is missing 'candidates' (expected {{'prompt': str, 'candidates': [str, ...]}})")
    return prompt, _candidate_list(name, value["candidates"]), value


def _check_prompt(name: str, prompt: Any) -> None:
    if prompt is not None and not isinstance(prompt, str) and not is_messages(prompt):
        raise TypeError(f"{name} prompt must be a str or a list of chat messages, got {type(prompt).__name__}")


def rank_item(input_: Any, input_format: str = "auto") -> RankItem:
    """One ranking input (a dict, a list of conversations or a :class:`NamedInput`) as PairRM texts."""
    name, value = _unpack(input_)
    prompt, candidates, row = _fields(name, value, _RANK_KEYS, ("prompt",))
    _check_prompt(name, prompt)
    instruction = _optional_str(name, row, "instruction")
    reference = _optional_str(name, row, "reference")
    answers = candidates if reference is None else [*candidates, reference]
    source, texts = answer_set_texts(
        prompt,
        answers,
        instruction=instruction,
        input_format=input_format,
        name=name,
        prompt_name=f"{name} prompt",
        answers_name=f"{name} candidates",
    )
    if reference is None:
        return RankItem(source, texts, candidates, name=name)
    return RankItem(source, texts[:-1], candidates, texts[-1], name=name)


def fuse_item(input_: Any, input_format: str = "auto") -> FuseItem:
    """One fusion input (a dict or a :class:`NamedInput`): plain-text prompt and candidates, and PairRM's texts."""
    name, value = _unpack(input_)
    prompt, candidates, row = _fields(name, value, _FUSE_KEYS, ("prompt", "input"))
    if not isinstance(prompt, str):
        raise TypeError(f"{name} prompt must be a str, got {type(prompt).__name__}")
    candidates = check_texts(f"{name} candidates", candidates)
    instruction = _optional_str(name, row, "instruction")
    source, texts = answer_set_texts(
        prompt,
        candidates,
        instruction=instruction,
        input_format=input_format,
        name=name,
        prompt_name=f"{name} prompt",
        answers_name=f"{name} candidates",
    )
    return FuseItem(prompt, candidates, instruction, source, texts, name)

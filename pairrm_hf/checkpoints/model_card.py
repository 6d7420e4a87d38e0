"""Model cards for what this package trains: PairRM, the other rankers and distilled one-pass students.

A card is a ``README.md`` with YAML metadata (``library_name``, ``base_model``, ``tags``, ``datasets``,
``license``, ``pipeline_tag``), a table of the metrics measured at the end of the run, the input form and a usage
snippet that runs as written (it names the Hub repo when one is known, else the saved folder).
``huggingface_hub.ModelCard.load`` parses it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CARD_KINDS", "ModelCardInfo", "model_card_text", "write_model_card", "usage_snippet"]

#: What a card describes: a PairRM checkpoint, another LLM-Blender ranker, or a distilled pointwise student.
CARD_KINDS = ("pairrm", "ranker", "student")

_BASE_TAGS = ("reward-model", "pairrm", "llm-blender")


@dataclass(frozen=True)
class ModelCardInfo:
    """Card fields the caller knows and training cannot: where it will be published and what it was trained on.

    Attributes:
        repo_id: the Hub repo the model goes to (the usage snippet names it; else the local folder).
        base_model: the Hub id of the starting backbone or checkpoint (local paths are left out of the metadata).
        datasets: Hub ids of the training data.
        license: an SPDX-style license id for the metadata.
        teacher: for a student, the Hub id or path of the ranker it was distilled from.
        tags: extra tags (``reward-model`` and ``pairrm`` are always there).
        training: short facts about the run (loss, steps…), listed in the card.
    """

    repo_id: str | None = None
    base_model: str | None = None
    datasets: tuple[str, ...] = ()
    license: str = "apache-2.0"
    teacher: str | None = None
    tags: tuple[str, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)

    def with_defaults(self, **values: Any) -> ModelCardInfo:
        """A copy where each field still unset (None or empty) takes ``values``' entry."""
        updates = {k: v for k, v in values.items() if not getattr(self, k) and v is not None}
        return dataclasses.replace(self, **updates)


def _hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub id (``owner/name``, not a local path), else None."""
    if not name or os.path.exists(name) or os.path.isabs(name) or name.count("/") != 1:
        return None
    return name


def usage_snippet(kind: str, model_id: str) -> str:
    """A Python snippet that loads ``model_id`` and scores one answer (for a student: with transformers alone)."""
    if kind == "student":
        return (
            "from transformers import pipeline\n\n"
            f'reward = pipeline("text-classification", model="{model_id}", device="cpu")\n'
            'prompt = "What is the capital of France?"\n'
            'for answer in ["Paris is the capital of France.", "I do not know."]:\n'
            '    out = reward({"text": prompt, "text_pair": answer}, function_to_apply="none")\n'
            '    print(answer, out["score"])  # higher is better\n'
        )
    return (
        "from pairrm_hf import PairRM\n\n"
        f'rm = PairRM.from_pretrained("{model_id}", device="cpu")\n'
        'ranking = rm.rank("What is the capital of France?", ["Paris.", "I do not know."])\n'
        "print(ranking[0].text)  # the best answer\n"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def model_card_text(kind: str, info: ModelCardInfo, metrics: Mapping[str, Any], folder: str) -> str:
    """The card's Markdown (YAML header included); ``folder`` is named in the snippet when ``info.repo_id`` is None."""
    from huggingface_hub import ModelCardData

    if kind not in CARD_KINDS:
        raise ValueError(f"kind must be one of {CARD_KINDS}, got {kind!r}")
    student = kind == "student"
    tags = list(dict.fromkeys([*_BASE_TAGS, *(["distillation", "text-classification"] if student else []), *info.tags]))
    data = ModelCardData(
        library_name="transformers" if student else "pairrm-hf",
        base_model=_hub_id(info.base_model),
        datasets=list(info.datasets) or None,
        license=info.license,
        tags=tags,
        pipeline_tag="text-classification" if student else None,
    )
    model_id = info.repo_id or os.path.abspath(folder)
    title = {
        "pairrm": "PairRM",
        "ranker": "LLM-Blender ranker",
        "student": "One-pass reward model distilled from PairRM",
    }
    lines = [f"# {title[kind]}", ""]
    if student:
        lines += [
            "An `AutoModelForSequenceClassification` with one label that scores one answer to a prompt: n forward "
            "passes rank n answers, where its pairwise teacher needs n(n−1). It was trained with "
            "pairrm-hf to reproduce the teacher's rankings.",
            "",
            "**Input form.** One text pair: `text` = the prompt, `text_pair` = the answer (the tokenizer joins them "
            "with its separator tokens; the longer part is truncated first). Chat prompts were rendered with "
            "LLM-Blender's conversation template. The output is a raw score (`problem_type: regression`): higher "
            "is better; compare scores of answers to the same prompt.",
            "",
        ]
        if info.teacher:
            teacher = (
                _hub_id(info.teacher) or f"a local checkpoint ({os.path.basename(os.path.normpath(info.teacher))})"
            )
            lines += [f"Teacher: `{teacher}`.", ""]
    else:
        lines += [
            "A pairwise reward model: it reads a prompt and two answers and says which is better. Load it with "
            "pairrm-hf (`pip install pairrm-hf`).",
            "",
        ]
    base = info.base_model
    if base and not _hub_id(base):
        lines += [f"Started from a local checkpoint (`{os.path.basename(os.path.normpath(base))}`).", ""]
    if info.training:
        lines += ["## Training", ""] + [f"- {k}: {_fmt(v)}" for k, v in info.training.items()] + [""]
    if metrics:
        lines += ["## Metrics at the end of training", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()] + [""]
    lines += ["## Usage", "", "```python", usage_snippet(kind, model_id).rstrip("\n"), "```", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def write_model_card(
    folder: str | os.PathLike, *, kind: str, info: ModelCardInfo | None = None, metrics: Mapping[str, Any] = ()
) -> str:
    """Write ``README.md`` into ``folder`` (see :func:`model_card_text`); returns its path."""
    folder = os.fspath(folder)
    text = model_card_text(kind, info or ModelCardInfo(), dict(metrics), folder)
    path = os.path.join(folder, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path

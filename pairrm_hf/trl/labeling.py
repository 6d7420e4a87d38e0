"""Preference labelling for ``trl.DPOTrainer``: rank N completions per prompt with PairRM, emit chosen/rejected pairs.

Needs ``datasets`` (the ``trl`` extra); it is imported on call, not at module import.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..checkpoints.loading import DEFAULT_MODEL
from ..generation.sampling import generate_samples
from ..ranking.inputs import answer_set_texts, check_input_format, is_messages
from ..ranking.preferences import PAIR_STRATEGIES, preference_pairs
from ..ranking.ranker import PairRM
from ..utils.checks import check_int, check_list, check_positive_int
from ._common import LazyPairRM

__all__ = ["label_preferences", "generate_and_label", "STRATEGIES"]

#: Pairing strategies of :func:`label_preferences`.
STRATEGIES = PAIR_STRATEGIES
_COLUMNS = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "rank_chosen", "rank_rejected")


class _Labeler:
    """The batched ``map`` function; an object (not a closure) so it pickles as a model path for ``num_proc``."""

    def __init__(
        self,
        ranker: LazyPairRM,
        prompt_column: str,
        completions_column: str,
        strategy: str,
        min_margin: float | None,
        ties: str,
        seed: int,
        input_format: str = "auto",
        extra_columns: Sequence[str] = (),
    ):
        self.ranker, self.prompt_column, self.completions_column = ranker, prompt_column, completions_column
        self.strategy, self.min_margin, self.ties, self.seed = strategy, min_margin, ties, seed
        self.input_format, self.extra_columns = input_format, tuple(extra_columns)

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        prompts, lists = batch[self.prompt_column], batch[self.completions_column]
        out: dict[str, list] = {c: [] for c in (*_COLUMNS, *self.extra_columns)}
        rows, sources, texts = [], [], []
        for row, prompt, cands in zip(indices, prompts, lists):
            cands = check_list(f"{self.completions_column}[{row}]", cands)
            if len(cands) < 2:
                continue  # nothing to pair
            source, cand_texts = answer_set_texts(
                prompt,
                cands,
                input_format=self.input_format,
                prompt_name=f"{self.prompt_column}[{row}]",
                answers_name=f"{self.completions_column}[{row}]",
            )
            sources.append(source)
            texts.append(cand_texts)
            rows.append((row, prompt, cands))
        if not rows:
            return out
        rankings = self.ranker.rm.rank_batch(sources, texts)
        position = {row: k for k, row in enumerate(indices)}
        for (row, prompt, cands), ranking in zip(rows, rankings):
            # seeded per row, so best_vs_random does not depend on batch_size or num_proc
            rng = np.random.default_rng([self.seed, row])
            pairs = preference_pairs(ranking.scores, self.strategy, rng=rng, ties=self.ties, min_margin=self.min_margin)
            for i, j in pairs:
                out["prompt"].append(prompt)
                out["chosen"].append(_as_completion(prompt, cands[i]))
                out["rejected"].append(_as_completion(prompt, cands[j]))
                out["score_chosen"].append(float(ranking.scores[i]))
                out["score_rejected"].append(float(ranking.scores[j]))
                out["rank_chosen"].append(int(ranking.ranks[i]))
                out["rank_rejected"].append(int(ranking.ranks[j]))
                for column in self.extra_columns:  # the input's other columns, repeated on each of its pairs
                    out[column].append(batch[column][position[row]])
        return out


def _as_completion(prompt: Any, completion: Any) -> Any:
    # Conversational prompts need assistant-message completions for DPOTrainer's chat-template path.
    if is_messages(prompt) and isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return completion


def label_preferences(
    dataset: Any,
    prompt_column: str = "prompt",
    completions_column: str = "completions",
    strategy: str = "best_vs_worst",
    ranker: str | os.PathLike | PairRM = DEFAULT_MODEL,
    min_margin: float | None = None,
    ties: str = "skip",
    seed: int = 0,
    batch_size: int = 64,
    num_proc: int | None = None,
    input_format: str = "auto",
    on_error: str = "raise",
):
    """Turn N completions per prompt into a DPO preference dataset, ranked by PairRM.

    Each row's completions are ranked with :meth:`PairRM.rank_batch` (``max_logits``: ``score_i`` = mean over all
    candidates of the symmetric logit ``C[i,j] − C[j,i]``, divisor n as upstream; ``rank`` 1 = best). Pairs:

    * ``best_vs_worst``: one pair per prompt, rank-first vs rank-last (ties in input order).
    * ``all_pairs``: every unordered pair, the better-ranked one chosen (n(n−1)/2 rows per prompt).
    * ``best_vs_random``: the best vs a uniformly drawn other completion (``numpy`` generator seeded with
      ``[seed, row index]``, so the choice does not depend on ``batch_size``/``num_proc``).

    A pair whose scores are equal is a tie: ``ties="skip"`` drops it, ``"keep"`` keeps it (chosen = earlier in the
    rank order). ``min_margin`` drops pairs with ``score_chosen − score_rejected < min_margin`` (a number; ``nan``
    is a ``ValueError``, since no margin compares with it).

    Rows with fewer than two completions cannot give a pair. As with ``pairrm label`` (and its ``--on-error``),
    ``on_error="raise"`` (default) stops before any compute with a ``ValueError`` naming the first such row and the
    count; ``on_error="skip"`` drops them and warns with the count. The result always has the columns below, also
    when no pair is left (0 rows), so a trainer never meets a dataset without ``chosen``/``rejected``.

    Args:
        dataset: a ``datasets.Dataset``, or a list of row dicts (rows with a chat prompt may mix str and
            assistant-message completions; a str one becomes ``[{"role": "assistant", "content": ...}]``).
        prompt_column: prompts: str (standard) or message lists (conversational; kept as messages).
        completions_column: per row a list of completions: str, or ``[{"role": "assistant", "content": ...}]``.
        ranker: PairRM folder / Hub id or a loaded :class:`PairRM`. A path is loaded once per process
            (:func:`pairrm_hf.ranking.ranker.shared_pairrm`) and reused by later calls; with ``num_proc`` each worker loads
            its own copy.
        batch_size: rows per ``datasets.map`` batch (one PairRM call each).
        input_format: ``"auto"`` (str prompts/completions stay plain, chat messages use the original's
            conversation template) or ``"conversation"`` (the template for all); see :mod:`pairrm_hf.ranking.inputs`.
        on_error: rows with fewer than two completions: ``"raise"`` or ``"skip"`` (with a warning).

    Returns:
        a ``datasets.Dataset`` with ``prompt``, ``chosen``, ``rejected``, ``score_chosen``, ``score_rejected``,
        ``rank_chosen``, ``rank_rejected``. With conversational prompts, ``chosen``/``rejected`` are
        ``[{"role": "assistant", "content": ...}]``, DPOTrainer's conversational format. The input's other columns
        (all but ``completions_column``) follow, repeated on each pair of their row, as ``pairrm label`` keeps them.
    """
    import datasets

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if ties not in ("skip", "keep"):
        raise ValueError(f"ties must be 'skip' or 'keep', got {ties!r}")
    if min_margin is not None and not isinstance(min_margin, (int, float)):
        raise TypeError(f"min_margin must be a number or None, got {type(min_margin).__name__}")
    if min_margin is not None and math.isnan(min_margin):
        raise ValueError("min_margin must be a number or None, got nan (no score margin compares with nan)")
    check_positive_int("batch_size", batch_size)
    check_input_format(input_format)
    if isinstance(dataset, (list, tuple)):
        dataset = _rows_to_dataset(list(dataset), prompt_column, completions_column)
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")
    for name, column in (("prompt_column", prompt_column), ("completions_column", completions_column)):
        if column not in dataset.column_names:
            raise ValueError(f"{name}={column!r} is not a column of the dataset (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    extra = [c for c in dataset.column_names if c not in (prompt_column, completions_column)]
    clash = [c for c in extra if c in _COLUMNS]
    if clash:
        raise ValueError(
            f"the dataset has column(s) {clash} that label_preferences writes; rename or remove them first"
        )
    _check_short_rows(dataset, completions_column, on_error)
    lazy = LazyPairRM(ranker, shared=True)  # a path loads once per process, reused by later calls and batches
    labeler = _Labeler(lazy, prompt_column, completions_column, strategy, min_margin, ties, seed, input_format, extra)
    # An explicit fingerprint: hashing the function would otherwise hash the whole model's weights.
    key = repr(
        (
            dataset._fingerprint,
            lazy.path,
            id(lazy._rm),
            prompt_column,
            completions_column,
            strategy,
            min_margin,
            ties,
            seed,
            input_format,
        )
    )
    out = dataset.map(
        labeler,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        desc="PairRM labelling",
    )
    if len(out) == 0 and out.column_names != [*_COLUMNS, *extra]:
        # datasets keeps the input's columns when every batch returned nothing; give the documented schema.
        features = _empty_features(dataset, prompt_column, completions_column)
        for column in extra:
            features[column] = dataset.features[column]
        out = datasets.Dataset.from_dict({c: [] for c in (*_COLUMNS, *extra)}, features=features)
    return out


def _kind(value: Any) -> str:
    if is_messages(value):
        return "chat messages"
    if isinstance(value, (list, tuple)):
        return "a list of " + (", ".join(sorted({_kind(v) for v in value})) or "nothing")
    return type(value).__name__


def _rows_to_dataset(rows: list, prompt_column: str, completions_column: str):
    """A ``datasets.Dataset`` of row dicts. A str completion next to a chat prompt becomes one assistant message
    (the same PairRM text, see :mod:`pairrm_hf.ranking.inputs`), so such rows may mix the two; values Arrow still
    cannot hold in one column are a ``ValueError`` naming the column and the two rows that disagree."""
    import datasets

    fixed = []
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"dataset[{k}] must be a dict, got {type(row).__name__}")
        cands = row.get(completions_column)
        if is_messages(row.get(prompt_column)) and isinstance(cands, (list, tuple)):
            row = {**row, completions_column: [_as_completion(row[prompt_column], c) for c in cands]}
        fixed.append(row)
    try:
        return datasets.Dataset.from_list(fixed)
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid/ArrowTypeError are both
        columns = list(dict.fromkeys(c for row in fixed for c in row))
        for column in columns:
            kinds = [_kind(row.get(column)) for row in fixed]
            first = next((k for k, kind in enumerate(kinds) if kinds[k] != "NoneType"), None)
            other = next((k for k, kind in enumerate(kinds) if kind not in (kinds[first], "NoneType")), None)
            if first is not None and other is not None:
                raise ValueError(
                    f"column {column!r} mixes kinds of values: dataset[{first}] holds {kinds[first]}, dataset[{other}] "
                    f"{kinds[other]}; one column holds one kind (plain-string prompts take plain-string "
                    "completions): label such rows in separate calls"
                ) from None
        raise ValueError(f"the rows cannot form one dataset: {err}") from None


def _check_short_rows(dataset, completions_column: str, on_error: str) -> None:
    """Count rows with fewer than two completions before any compute; raise or warn (see ``on_error``)."""
    short, first = 0, None
    for start in range(0, len(dataset), 1000):
        column = dataset[start : start + 1000][completions_column]
        for k, value in enumerate(column):
            if value is not None and not isinstance(value, (str, bytes)) and len(value) >= 2:
                continue
            if isinstance(value, (str, bytes)) or value is None:
                continue  # a wrong type is reported, naming the row, where the row is read
            short += 1
            first = start + k if first is None else first
    if not short:
        return
    what = f"{short} of {len(dataset)} rows with fewer than 2 completions (first: {completions_column}[{first}])"
    if on_error == "raise":
        raise ValueError(f"{what}; a preference pair needs at least 2. Pass on_error='skip' to drop such rows")
    warnings.warn(f"label_preferences: skipped {what}; a preference pair needs at least 2", stacklevel=3)


def _empty_features(dataset, prompt_column: str, completions_column: str):
    """The features a labelled dataset would have: prompt as given, chosen/rejected as one completion (messages
    when the prompt is conversational)."""
    import datasets

    def inner(feature):  # the item type of a list column, whichever way this datasets version spells lists
        if isinstance(feature, list):
            return feature[0]
        return getattr(feature, "feature", None)

    prompt = dataset.features[prompt_column]
    text = datasets.Value("string")
    conversational = inner(prompt) is not None
    completion = inner(dataset.features[completions_column]) or text
    answer = [{"role": text, "content": text}] if conversational and completion == text else completion
    if isinstance(answer, list) and hasattr(datasets, "List"):
        answer = datasets.List(answer[0])
    number, rank = datasets.Value("float64"), datasets.Value("int64")
    return datasets.Features(
        {
            "prompt": prompt,
            "chosen": answer,
            "rejected": answer,
            "score_chosen": number,
            "score_rejected": number,
            "rank_chosen": rank,
            "rank_rejected": rank,
        }
    )


def generate_and_label(
    policy_model: Any,
    tokenizer: Any,
    prompts: Sequence,
    n: int = 4,
    ranker: str | os.PathLike | PairRM = DEFAULT_MODEL,
    strategy: str = "best_vs_worst",
    *,
    batch_size: int = 8,
    use_chat_template: bool | None = None,
    seed: int | None = 0,
    label_kwargs: dict | None = None,
    input_format: str = "auto",
    **sampling: Any,
):
    """Sample ``n`` completions per prompt from a causal LM, then :func:`label_preferences` them.

    Prompts are left-padded and generated in batches of ``batch_size`` prompts; the prompt tokens are stripped and
    the completion decoded with ``skip_special_tokens``. With ``use_chat_template`` (default: when the tokenizer has
    a chat template) each prompt is rendered with ``apply_chat_template(add_generation_prompt=True)``; str prompts
    are then treated as one user message and the result is in the conversational format, so ``DPOTrainer``
    renders training rows the same way; PairRM then scores them, as every chat, through the original's conversation
    template (``input_format``, see :func:`label_preferences`). Sampling defaults: ``do_sample=True, max_new_tokens=64``; override with
    ``**sampling`` (``temperature``, ``top_p``, ...). ``seed`` seeds torch's RNG for the sampling (the global RNG
    state is restored afterwards).

    Returns:
        the labelled ``datasets.Dataset`` (see :func:`label_preferences`).
    """
    prompts = check_list("prompts", prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    check_int("n", n, minimum=2)  # a pair needs two completions
    check_input_format(input_format)
    for k, p in enumerate(prompts):
        if not isinstance(p, str) and not is_messages(p):
            raise TypeError(
                f"prompts[{k}] must be a str or a list of {{'role', 'content'}} messages, got {type(p).__name__}"
            )
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template is None:
        use_chat_template = has_template
    if not use_chat_template and any(not isinstance(p, str) for p in prompts):
        raise ValueError(
            "conversational prompts need a tokenizer with a chat template (use_chat_template=False or none set)"
        )
    if use_chat_template:
        prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        add_special = False  # the template already holds the special tokens it wants
    else:
        texts, add_special = list(prompts), True
    sampling = {"do_sample": True, "max_new_tokens": 64, **sampling}
    device = next(policy_model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        completions = generate_samples(
            policy_model, tokenizer, texts, n=n, batch_size=batch_size, add_special_tokens=add_special, **sampling
        )
    import datasets

    data = datasets.Dataset.from_dict({"prompt": prompts, "completions": completions})
    label_kwargs = {"input_format": input_format, **(label_kwargs or {})}
    return label_preferences(data, strategy=strategy, ranker=ranker, seed=seed or 0, **label_kwargs)

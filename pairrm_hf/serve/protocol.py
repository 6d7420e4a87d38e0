"""The JSON protocol of ``pairrm serve``: request checks (errors name the field) and each endpoint's computation.

Every endpoint runs ordinary :class:`~pairrm_hf.PairRM` methods on a request view of the served model, so a
served result is the in-process result (see :mod:`pairrm_hf.serve.batcher`). Floats are sent as JSON numbers with
Python's shortest round-trip repr, so a client gets the float32/float64 values bit for bit.

``POST /rank``     ``{"prompts": [str], "candidates": [[str]], "aggregation"?: "max_logits", "instructions"?: [str],
                   "seed"?: 0, "return_matrix"?: false}`` → ``{"rankings": [{"scores", "ranks", "comparisons",
                   "matrix"?}]}`` (:meth:`PairRM.rank_batch`; ``matrix`` = ``C[i][j]`` for ``max_logits``/``max_wins``)
``POST /compare``  ``{"prompts", "candidates_a", "candidates_b", "mode"?: "symmetric", "temperature"?: 1.0,
                   "instructions"?}`` → ``{"logits": [...], "probabilities": [...]}`` (:meth:`PairRM.compare`)
``POST /score``    ``{"prompts", "candidates": [[str]], "references"?: [str], "ref_mode"?: "longest",
                   "instructions"?}`` → ``{"rewards": [[...]]}`` (:meth:`PairRM.rank_with_ref`)
``POST /get_reward`` OpenRLHF's remote reward protocol, see :func:`get_reward`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ranking.methods import RANKING_METHODS
from ..ranking.ranker import COMPARE_MODES, REF_MODES, PairRM
from ..ranking.rewards import group_rewards, reference_rewards, win_probability
from ..utils.checks import check_candidate_lists, check_same_length, check_texts

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "ENDPOINTS",
    "LABEL_MODES",
    "Limits",
    "RequestError",
    "RewardRequest",
    "SEED_RANGE",
    "get_reward",
    "method_pairs",
    "parse_json",
    "read_reward_request",
    "request_schemas",
]

#: How ``/get_reward`` reads OpenRLHF's ``labels``: ``reference`` (a non-empty label is a reference answer) or
#: ``ignore`` (labels carry something else, e.g. verifier metadata; every reward is group-relative).
LABEL_MODES = ("reference", "ignore")
#: Default bound on the ordered pairs one request may ask the model for (about a minute of a base-size model on
#: one GPU, several on CPU): 16 prompts × 64 candidates ranked in full, or 32,768 symmetric comparisons.
DEFAULT_MAX_PAIRS = 65_536
#: Seeds a request may send (the range ``torch.Generator.manual_seed`` takes, as :meth:`PairRM.rank_batch` does).
SEED_RANGE = (-(2**63), 2**64 - 1)


class RequestError(ValueError):
    """A bad request: HTTP ``status`` with a message naming the ``field`` (``body`` for the request as a whole)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.status = status


class Limits:
    """Per-request bounds (the body size bound is the app's).

    Args:
        max_items: prompts (or queries) per request.
        max_candidates: candidates per prompt.
        labels: how ``/get_reward`` reads labels (one of :data:`LABEL_MODES`).
        max_pairs: ordered pairs the model may score for one request, counted before any work with the method's
            real cost (:func:`method_pairs`); more gets 413.
    """

    def __init__(
        self,
        max_items: int = 1024,
        max_candidates: int = 64,
        labels: str = "reference",
        max_pairs: int = DEFAULT_MAX_PAIRS,
    ):
        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        if not isinstance(max_pairs, int) or max_pairs < 1:
            raise ValueError(f"max_pairs must be a positive int, got {max_pairs!r}")
        self.max_items = max_items
        self.max_candidates = max_candidates
        self.labels = labels
        self.max_pairs = max_pairs


def parse_json(body: bytes) -> Any:
    """The request body as JSON; anything that is not plain JSON (bad UTF-8, syntax, ``NaN``/``Infinity``, nesting
    too deep for the parser, an integer of more than 4,300 digits) is a 400 naming ``body``."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(body, parse_constant=no_constant)
    except RecursionError:
        raise RequestError("body", "body is not valid JSON: nested too deeply", 400) from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError, so is the digit limit
        raise RequestError("body", f"body is not valid JSON: {err}", 400) from None


def method_pairs(method: str, n: int) -> int:
    """Ordered pairs the model scores to rank ``n`` candidates with ``method``: the registry's cost (the worst case
    for ``sort``). The one place the server prices a request; ``/compare`` and ``/score`` are priced by their callers.
    """
    if method not in RANKING_METHODS:
        raise ValueError(f"unknown ranking method {method!r}; registered: {sorted(RANKING_METHODS)}")
    return int(RANKING_METHODS[method].cost(n))


def _check_cost(pairs: int, field: str, limits: Limits) -> None:
    if pairs > limits.max_pairs:
        raise RequestError(
            field,
            f"{field}: this request asks for {pairs:,} ordered pairs; this server computes at most "
            f"{limits.max_pairs:,} per request (split it, or rank with a budgeted aggregation such as 'knockout')",
            413,
        )


def _field_of(message: str) -> str:
    # the shared checks start every message with the argument's name and index, e.g. "candidates[2][0] must be..."
    # or "candidates[2][0]: holds ..."
    return message.split(" ", 1)[0].rstrip(":")


def _check(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise RequestError(_field_of(str(err)), str(err)) from None


def _object(payload: Any, allowed: tuple[str, ...] | None) -> Mapping:
    if not isinstance(payload, Mapping):
        raise RequestError("body", f"the request body must be a JSON object, got {type(payload).__name__}")
    if allowed is not None:
        for key in payload:
            if key not in allowed:
                raise RequestError(key, f"{key}: unknown field; expected some of {list(allowed)}")
    return payload


def _required(body: Mapping, name: str) -> Any:
    if name not in body or body[name] is None:
        raise RequestError(name, f"{name} is required")
    return body[name]


def _texts(body: Mapping, name: str, limits: Limits, required: bool = True) -> list[str] | None:
    if not required and body.get(name) is None:
        return None
    texts = _check(check_texts, name, _required(body, name))
    if len(texts) > limits.max_items:
        raise RequestError(name, f"{name} has {len(texts)} items; this server takes at most {limits.max_items}")
    return texts


def _candidate_lists(body: Mapping, name: str, limits: Limits) -> list[list[str]]:
    lists = _check(check_candidate_lists, name, _required(body, name))
    if len(lists) > limits.max_items:
        raise RequestError(name, f"{name} has {len(lists)} items; this server takes at most {limits.max_items}")
    for k, cands in enumerate(lists):
        if len(cands) > limits.max_candidates:
            raise RequestError(
                f"{name}[{k}]",
                f"{name}[{k}] has {len(cands)} candidates; this server takes at most {limits.max_candidates}",
            )
    return lists


def _choice(body: Mapping, name: str, choices: Collection[str], default: str) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise RequestError(name, f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _typed(body: Mapping, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; JSON true must not pass as a seed or a temperature
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RequestError(name, f"{name} must be a {names}, got {type(value).__name__}")
    return value


def _floats(values) -> list[float]:
    return [float(x) for x in values]


# ------------------------------------------------------------------------------------------------ endpoints
_RANK_FIELDS = ("prompts", "candidates", "aggregation", "instructions", "seed", "return_matrix")


def rank(rm: PairRM, payload: Any, limits: Limits) -> dict:
    """``/rank``: :meth:`PairRM.rank_batch` of each prompt's candidates."""
    body = _object(payload, _RANK_FIELDS)
    prompts = _texts(body, "prompts", limits)
    candidates = _candidate_lists(body, "candidates", limits)
    _check(check_same_length, "prompts", prompts, candidates=candidates)
    instructions = _texts(body, "instructions", limits, required=False)
    _check(check_same_length, "prompts", prompts, instructions=instructions)
    aggregation = _choice(body, "aggregation", RANKING_METHODS, "max_logits")
    seed = _typed(body, "seed", int, 0)
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise RequestError("seed", f"seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}, got {seed}")
    _check_cost(sum(method_pairs(aggregation, len(c)) for c in candidates), "candidates", limits)
    return_matrix = _typed(body, "return_matrix", bool, False)
    rankings = rm.rank_batch(prompts, candidates, aggregation=aggregation, instructions=instructions, seed=seed)
    out = []
    for r in rankings:
        item = {"scores": _floats(r.scores), "ranks": [int(x) for x in r.ranks], "comparisons": int(r.comparisons)}
        if return_matrix:
            item["matrix"] = None if r.matrix is None else [_floats(row) for row in r.matrix]
        out.append(item)
    return {"rankings": out}


_COMPARE_FIELDS = ("prompts", "candidates_a", "candidates_b", "mode", "temperature", "instructions")


def compare(rm: PairRM, payload: Any, limits: Limits) -> dict:
    """``/compare``: :meth:`PairRM.compare` logits and the probabilities of :meth:`PairRM.compare_proba`."""
    body = _object(payload, _COMPARE_FIELDS)
    prompts = _texts(body, "prompts", limits)
    a = _texts(body, "candidates_a", limits)
    b = _texts(body, "candidates_b", limits)
    _check(check_same_length, "prompts", prompts, candidates_a=a, candidates_b=b)
    instructions = _texts(body, "instructions", limits, required=False)
    _check(check_same_length, "prompts", prompts, instructions=instructions)
    mode = _choice(body, "mode", COMPARE_MODES, "symmetric")
    temperature = _typed(body, "temperature", (int, float), 1.0)
    try:
        temperature = float(temperature)
    except OverflowError:  # a JSON integer of hundreds of digits
        raise RequestError("temperature", "temperature must be a finite number > 0, got a too large integer") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise RequestError("temperature", f"temperature must be a finite number > 0, got {temperature!r}")
    _check_cost(len(prompts) * (2 if mode == "symmetric" else 1), "prompts", limits)
    logits = rm.compare(prompts, a, b, mode=mode, instructions=instructions)
    proba = win_probability(logits, temperature).astype(np.float32)  # PairRM.compare_proba on the same logits
    return {"logits": _floats(logits), "probabilities": _floats(proba)}


_SCORE_FIELDS = ("prompts", "candidates", "references", "ref_mode", "instructions")


def score(rm: PairRM, payload: Any, limits: Limits) -> dict:
    """``/score``: :meth:`PairRM.rank_with_ref` rewards ``C[c, ref] − C[ref, c]`` of each candidate."""
    body = _object(payload, _SCORE_FIELDS)
    prompts = _texts(body, "prompts", limits)
    candidates = _candidate_lists(body, "candidates", limits)
    _check(check_same_length, "prompts", prompts, candidates=candidates)
    references = _texts(body, "references", limits, required=False)
    _check(check_same_length, "prompts", prompts, references=references)
    instructions = _texts(body, "instructions", limits, required=False)
    _check(check_same_length, "prompts", prompts, instructions=instructions)
    ref_mode = _choice(body, "ref_mode", REF_MODES, "longest")
    _check_cost(sum(2 * len(c) for c in candidates), "candidates", limits)
    rewards = rm.rank_with_ref(prompts, candidates, ref_mode=ref_mode, references=references, instructions=instructions)
    return {"rewards": [_floats(r) for r in rewards]}


@dataclass
class RewardRequest:
    """A checked ``/get_reward`` body (see :func:`get_reward`): one entry per sample, in request order.

    ``sources[k]`` is the PairRM source (the prompt, ``""`` without prompts), ``responses[k]`` the response text,
    ``use_label[k]`` whether the sample is scored against its label (else group-relative).
    """

    queries: list[str]
    prompts: list[str] | None
    labels: list[str | None] | None
    sources: list[str]
    responses: list[str]
    use_label: list[bool]


def read_reward_request(payload: Any, limits: Limits) -> RewardRequest:
    """Check a ``/get_reward`` body (:class:`RequestError` naming the field) before any compute.

    An empty ``query`` list is valid (an empty shard) and gives an empty :class:`RewardRequest`.
    """
    body = _object(payload, None)
    raw = _required(body, "query")
    if isinstance(raw, list) and not raw:
        return RewardRequest([], [], [], [], [], [])
    queries = _texts(body, "query", limits)
    prompts = _texts(body, "prompts", limits, required=False)
    _check(check_same_length, "query", queries, prompts=prompts)
    labels = body.get("labels")
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not isinstance(labels, list):
            raise RequestError("labels", f"labels must be a list of str or null, got {type(labels).__name__}")
        _check(check_same_length, "query", queries, labels=labels)
        for k, label in enumerate(labels):
            if label is not None and not isinstance(label, str):
                raise RequestError(f"labels[{k}]", f"labels[{k}] must be a str or null, got {type(label).__name__}")
    n = len(queries)
    sources = prompts if prompts is not None else [""] * n
    responses = [q[len(p) :] if p and q.startswith(p) else q for q, p in zip(queries, sources)]
    use_label = [
        limits.labels == "reference" and labels is not None and isinstance(labels[k], str) and labels[k] != ""
        for k in range(n)
    ]
    if prompts is None and not all(use_label):
        raise RequestError(
            "prompts",
            "prompts is required for group-relative rewards (responses without a label are compared "
            "with the other responses to the same prompt)",
        )
    return RewardRequest(queries, prompts, labels, list(sources), responses, use_label)


def get_reward(rm: PairRM, payload: Any, limits: Limits) -> dict:
    """``/get_reward``: OpenRLHF's remote reward model protocol (``--remote_rm_url http://host:port/get_reward``).

    Request: ``{"query": [str], "prompts": [str], "labels": [str | null]}``: ``query[k]`` is prompt + response text
    as OpenRLHF renders it, ``prompts[k]`` the prompt text, ``labels[k]`` the dataset's label (``--label_key``).
    Other fields that OpenRLHF versions add are ignored. Response: ``{"rewards": [float], "scores": [float],
    "extra_logs": {"pairrm_against_label": [0/1]}}`` (``scores`` = ``rewards``, which OpenRLHF's dynamic filtering
    reads).

    How PairRM turns it into rewards (``s(x, y) = C[x, y] − C[y, x]``, the symmetric logit):

    * the response is ``query[k]`` minus its leading ``prompts[k]`` (the whole query when it does not start with
      its prompt); the PairRM source is ``prompts[k]``;
    * **against the label** when ``labels[k]`` is a non-empty string (and the server's label mode is
      ``reference``): ``r = s(response, label)``, the :meth:`PairRM.rank_with_ref` reward (0 when equal);
    * **group-relative** otherwise: among the responses of this request with the same prompt (and no label),
      ``r_i = 1/(n−1) Σ_{j≠i} s(c_i, c_j)`` (``PairRMReward(mode="group")``'s reward; a lone response gets 0).
      OpenRLHF sends the ``n_samples_per_prompt`` samples of a prompt in one request.
    """
    request = read_reward_request(payload, limits)
    if not request.queries:  # an empty shard (OpenRLHF sends one to all but the first of several URLs)
        return {"rewards": [], "scores": [], "extra_logs": {"pairrm_against_label": []}}
    n, sources, responses = len(request.queries), request.sources, request.responses
    labels, use_label = request.labels, request.use_label
    labelled = [k for k in range(n) if use_label[k]]
    groups: dict[str, list[int]] = {}
    for k in range(n):
        if not use_label[k]:
            groups.setdefault(sources[k], []).append(k)
    # every check before any compute
    for members in groups.values():
        if len(members) > limits.max_candidates:
            raise RequestError(
                "query",
                f"{len(members)} responses share prompts[{members[0]}]; this server compares at most "
                f"{limits.max_candidates} per prompt",
            )
    _check_cost(2 * len(labelled) + sum(method_pairs("max_logits", len(m)) for m in groups.values()), "query", limits)
    rewards = [0.0] * n
    if labelled:
        values = reference_rewards(
            rm, [sources[k] for k in labelled], [responses[k] for k in labelled], [labels[k] for k in labelled]
        )
        for k, v in zip(labelled, values):
            rewards[k] = float(v)
    if groups:
        order = [k for members in groups.values() for k in members]  # contiguous runs of equal prompts
        values = group_rewards(rm, [sources[k] for k in order], [responses[k] for k in order])
        for k, v in zip(order, values):
            rewards[k] = float(v)
    return {
        "rewards": rewards,
        "scores": list(rewards),
        "extra_logs": {"pairrm_against_label": [1.0 if u else 0.0 for u in use_label]},
    }


def request_schemas(limits: Limits) -> dict[str, dict]:
    """JSON Schema of each endpoint's request body under ``limits`` (what ``/openapi.json`` declares).

    The schemas describe the shape; the checks above are the rule (e.g. equal lengths, the cost limit), and they
    answer with the field that breaks it.
    """
    text = {"type": "string"}
    texts = {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_items}
    candidate_lists = {
        "type": "array",
        "items": {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_candidates},
        "minItems": 1,
        "maxItems": limits.max_items,
    }

    def obj(description: str, required: list[str], properties: dict, closed: bool = True) -> dict:
        return {
            "type": "object",
            "description": description,
            "required": required,
            "properties": properties,
            "additionalProperties": not closed,
        }

    return {
        "rank": obj(
            "Rank each prompt's candidates (PairRM.rank_batch); at most "
            f"{limits.max_pairs} ordered pairs per request (413 beyond).",
            ["prompts", "candidates"],
            {
                "prompts": texts,
                "candidates": candidate_lists,
                "aggregation": {"enum": list(RANKING_METHODS), "default": "max_logits"},
                "instructions": texts,
                "seed": {"type": "integer", "minimum": SEED_RANGE[0], "maximum": SEED_RANGE[1], "default": 0},
                "return_matrix": {"type": "boolean", "default": False},
            },
        ),
        "compare": obj(
            "Logits and probabilities that candidates_a[k] beats candidates_b[k] (PairRM.compare).",
            ["prompts", "candidates_a", "candidates_b"],
            {
                "prompts": texts,
                "candidates_a": texts,
                "candidates_b": texts,
                "mode": {"enum": list(COMPARE_MODES), "default": "symmetric"},
                "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
                "instructions": texts,
            },
        ),
        "score": obj(
            "Rewards of each candidate against its prompt's reference (PairRM.rank_with_ref).",
            ["prompts", "candidates"],
            {
                "prompts": texts,
                "candidates": candidate_lists,
                "references": texts,
                "ref_mode": {"enum": list(REF_MODES), "default": "longest"},
                "instructions": texts,
            },
        ),
        "get_reward": obj(
            "OpenRLHF's remote reward protocol (other fields are ignored).",
            ["query"],
            {
                "query": texts,
                "prompts": texts,
                "labels": {"type": "array", "items": {"type": ["string", "null"]}, "maxItems": limits.max_items},
            },
            closed=False,
        ),
    }


#: Endpoint name → function ``(rm, payload, limits) -> response dict``.
ENDPOINTS: dict[str, Callable[[PairRM, Any, Limits], dict]] = {
    "rank": rank,
    "compare": compare,
    "score": score,
    "get_reward": get_reward,
}

"""Clients of ``pairrm serve`` (standard library only: no extra needed on the trainer side).

* :class:`RemotePairRM` — :class:`~pairrm_hf.PairRM`'s ranking methods over HTTP, same arguments and result types.
* :func:`compute_score` / :func:`compute_score_batch` — verl custom reward functions (``custom_reward_function``):
  the reward of a solution against ``ground_truth``.
* :class:`pairrm_hf.trl.PairRMRemoteReward` (in the TRL package) builds on :class:`RemotePairRM`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ranking.ranker import RankedCandidate, Ranking

__all__ = ["RemotePairRM", "RemoteError", "compute_score", "compute_score_batch", "URL_ENV"]

#: Environment variable with the server URL, read when a client is built without one.
URL_ENV = "PAIRRM_URL"


class RemoteError(RuntimeError):
    """The server failed or could not be reached (4xx answers raise ``ValueError`` with the server's message)."""


class RemotePairRM:
    """A :class:`~pairrm_hf.PairRM` served by ``pairrm serve`` at ``url``: ``rank``, ``rank_batch``, ``compare``,
    ``compare_proba``, ``comparison_matrices``, ``rank_with_ref`` with the in-process signatures and result types.

    Args:
        url: ``http://host:port`` of the server (default: ``$PAIRRM_URL``).
        api_key: bearer token (default: ``$PAIRRM_API_KEY``).
        timeout: seconds per HTTP request.
        retries: extra attempts on connection errors and 503 (server busy), one second apart.

    Bad input raises ``ValueError`` with the server's message (which names the field); a server or network failure
    raises :class:`RemoteError`. The object pickles as its settings.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 3):
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise ValueError(f"url is required (or set ${URL_ENV})")
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PAIRRM_API_KEY")
        self.timeout = timeout
        self.retries = retries

    def __repr__(self) -> str:
        return f"RemotePairRM({self.url!r})"

    def request(self, endpoint: str, payload: dict | None = None) -> dict:
        """POST ``payload`` to ``/endpoint`` (GET when ``payload`` is None); the decoded JSON answer."""
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(f"{self.url}/{endpoint.lstrip('/')}", data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                try:
                    detail = json.loads(err.read()).get("error", "")
                except (ValueError, AttributeError):
                    detail = ""
                if err.code == 503 and attempt < self.retries:
                    last = err
                    time.sleep(1.0)
                    continue
                if 400 <= err.code < 500:
                    raise ValueError(detail or f"HTTP {err.code} from {self.url}/{endpoint}") from None
                raise RemoteError(f"HTTP {err.code} from {self.url}/{endpoint}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                last = err
                if attempt < self.retries:
                    time.sleep(1.0)
        raise RemoteError(f"cannot reach {self.url}/{endpoint}: {last}")

    def health(self) -> dict:
        """The server's ``/health``."""
        return self.request("health")

    # ------------------------------------------------------------------------------------- PairRM's methods
    def compare(
        self,
        prompts: Sequence[str],
        candidates_a: Sequence[str],
        candidates_b: Sequence[str],
        *,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
    ) -> np.ndarray:
        """:meth:`PairRM.compare`: float32 logits, > 0 when ``candidates_a[k]`` is better."""
        out = self.request(
            "compare",
            _drop_none(
                {
                    "prompts": _list(prompts),
                    "candidates_a": _list(candidates_a),
                    "candidates_b": _list(candidates_b),
                    "mode": mode,
                    "instructions": _list(instructions),
                }
            ),
        )
        return np.asarray(out["logits"], dtype=np.float32)

    def compare_proba(
        self,
        prompts: Sequence[str],
        candidates_a: Sequence[str],
        candidates_b: Sequence[str],
        *,
        temperature: float = 1.0,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
    ) -> np.ndarray:
        """:meth:`PairRM.compare_proba`: float32 probability that A is better."""
        out = self.request(
            "compare",
            _drop_none(
                {
                    "prompts": _list(prompts),
                    "candidates_a": _list(candidates_a),
                    "candidates_b": _list(candidates_b),
                    "mode": mode,
                    "temperature": temperature,
                    "instructions": _list(instructions),
                }
            ),
        )
        return np.asarray(out["probabilities"], dtype=np.float32)

    def rank_batch(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        aggregation: str = "max_logits",
        instructions: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[Ranking]:
        """:meth:`PairRM.rank_batch`: one :class:`~pairrm_hf.Ranking` per prompt (``matrix`` included)."""
        candidates = [_list(c) for c in candidates] if isinstance(candidates, (list, tuple)) else candidates
        out = self.request(
            "rank",
            _drop_none(
                {
                    "prompts": _list(prompts),
                    "candidates": candidates,
                    "aggregation": aggregation,
                    "instructions": _list(instructions),
                    "seed": seed,
                    "return_matrix": True,
                }
            ),
        )
        rankings = []
        for item, cands in zip(out["rankings"], candidates):
            matrix = None if item.get("matrix") is None else np.asarray(item["matrix"], dtype=np.float32)
            rankings.append(
                Ranking(
                    np.asarray(item["scores"], dtype=np.float32),
                    np.asarray(item["ranks"], dtype=np.int32),
                    matrix,
                    item["comparisons"],
                    list(cands),
                )
            )
        return rankings

    def rank(
        self,
        prompt: str,
        candidates: Sequence[str],
        *,
        aggregation: str = "max_logits",
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedCandidate]:
        """:meth:`PairRM.rank`: the candidates best first."""
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        ranked = self.rank_batch(
            [prompt], [candidates], aggregation=aggregation, instructions=None if instruction is None else [instruction]
        )[0].ranked()
        return ranked if top_k is None else ranked[:top_k]

    def comparison_matrices(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *, instructions: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """:meth:`PairRM.comparison_matrices`: float32 ``[n, n]`` logits per prompt."""
        return [r.matrix for r in self.rank_batch(prompts, candidates, instructions=instructions)]

    def rank_with_ref(
        self,
        prompts: Sequence[str],
        candidates: Sequence[Sequence[str]],
        *,
        ref_mode: str = "longest",
        references: Sequence[str] | None = None,
        instructions: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """:meth:`PairRM.rank_with_ref`: float64 rewards against each prompt's reference."""
        candidates = [_list(c) for c in candidates] if isinstance(candidates, (list, tuple)) else candidates
        out = self.request(
            "score",
            _drop_none(
                {
                    "prompts": _list(prompts),
                    "candidates": candidates,
                    "references": _list(references),
                    "ref_mode": ref_mode,
                    "instructions": _list(instructions),
                }
            ),
        )
        return [np.asarray(r, dtype=np.float64) for r in out["rewards"]]


def _list(value: Any) -> Any:
    # tuples → lists so json encodes them; anything else is sent as is and the server names what is wrong with it
    return list(value) if isinstance(value, tuple) else value


def _drop_none(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if v is not None}


# ------------------------------------------------------------------------------------------------ verl
_CLIENTS: dict[tuple, RemotePairRM] = {}


def _client(url: str | None, api_key: str | None) -> RemotePairRM:
    key = (url or os.environ.get(URL_ENV), api_key)
    if key not in _CLIENTS:
        _CLIENTS[key] = RemotePairRM(url, api_key=api_key)
    return _CLIENTS[key]


def _prompt(extra_info: Any, prompt_key: str) -> str:
    if isinstance(extra_info, dict) and isinstance(extra_info.get(prompt_key), str):
        return extra_info[prompt_key]
    return ""


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    prompt_key: str = "question",
    **_: Any,
) -> float:
    """A verl ``custom_reward_function``: PairRM's reward of ``solution_str`` against ``ground_truth``.

    ``C[solution, truth] − C[truth, solution]`` (``/score`` with ``references=[ground_truth]``; 0 when equal, and
    above 0 when PairRM prefers the solution). The prompt is ``extra_info[prompt_key]`` when present (verl's
    data preprocessing scripts often keep it there), else empty. ``url``/``api_key`` come from verl's
    ``custom_reward_function.reward_kwargs`` or ``$PAIRRM_URL``/``$PAIRRM_API_KEY``.
    """
    rewards = _client(url, api_key).rank_with_ref(
        [_prompt(extra_info, prompt_key)], [[solution_str]], references=[ground_truth]
    )
    return float(rewards[0][0])


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[str],
    extra_infos: Sequence[dict | None] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    prompt_key: str = "question",
    **_: Any,
) -> list[float]:
    """:func:`compute_score` for a whole batch in one request (verl's batch reward manager passes lists)."""
    n = len(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [None] * n
    rewards = _client(url, api_key).rank_with_ref(
        [_prompt(i, prompt_key) for i in infos], [[s] for s in solution_strs], references=list(ground_truths)
    )
    return [float(r[0]) for r in rewards]

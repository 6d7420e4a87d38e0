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
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..ranking.inputs import batch_texts, compare_texts
from ..ranking.ranker import REF_MODES, RankedCandidate, Ranking, rank_one
from ..ranking.rewards import reference_rewards
from ..utils.checks import check_positive_number

__all__ = ["RemotePairRM", "RemoteError", "compute_score", "compute_score_batch", "URL_ENV"]

#: Environment variable with the server URL, read when a client is built without one.
URL_ENV = "PAIRRM_URL"


class RemoteError(RuntimeError):
    """The server failed or could not be reached (4xx answers raise ``ValueError`` with the server's message)."""


class RemotePairRM:
    """A :class:`~pairrm_hf.PairRM` served by ``pairrm serve`` at ``url``: ``rank``, ``rank_batch``, ``compare``,
    ``compare_proba``, ``comparison_matrices``, ``rank_with_ref`` with the in-process signatures, input rule (chat
    prompts and answers, ``instructions``, ``input_format``), argument checks and result types.

    Args:
        url: ``http://host:port`` (or ``https://``) of the server (default: ``$PAIRRM_URL``).
        api_key: bearer token (default: ``$PAIRRM_API_KEY``).
        timeout: seconds one method call may take in all, retries included; then :class:`RemoteError`.
        retries: extra attempts when the server refuses the connection or answers 503 (busy), about a second
            apart, within ``timeout``. A request that may have reached the engine (a timeout, a dropped
            connection) is never sent again, so it is never computed twice.

    Texts are rendered here by the same input rule as :class:`~pairrm_hf.PairRM` (chats become PairRM's
    conversation template) and sent as plain strings, so the server computes exactly the in-process rows. Bad input
    raises the in-process ``ValueError``/``TypeError`` before anything is sent, or ``ValueError`` with the server's
    message (which names the field); a server or network failure raises :class:`RemoteError`. The object pickles as
    its settings.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 3):
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise ValueError(f"url is required (or set ${URL_ENV})")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be http://host:port or https://host:port, got {url!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PAIRRM_API_KEY")
        self.timeout = timeout
        self.retries = retries

    def __repr__(self) -> str:
        return f"RemotePairRM({self.url!r})"

    def request(self, endpoint: str, payload: dict | None = None) -> dict:
        """POST ``payload`` to ``/endpoint`` (GET when ``payload`` is None); the decoded JSON object answered."""
        data = None if payload is None else json.dumps(payload).encode()
        headers: dict[str, Any] = {"Content-Type": "application/json"}
        if self.api_key:  # as UTF-8 bytes: http.client would encode a str as Latin-1 and refuse other keys
            headers["Authorization"] = b"Bearer " + self.api_key.encode("utf-8")
        where = f"{self.url}/{endpoint.lstrip('/')}"
        deadline = time.monotonic() + self.timeout
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            req = urllib.request.Request(where, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=left) as response:
                    return _json_object(_read(response, deadline), where)
            except urllib.error.HTTPError as err:
                try:
                    detail = json.loads(err.read()).get("error", "")
                except (ValueError, AttributeError, OSError):
                    detail = ""
                if err.code == 503 and attempt < self.retries:  # busy: nothing was computed
                    last = err
                    time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
                    continue
                if 400 <= err.code < 500:
                    raise ValueError(detail or f"HTTP {err.code} from {where}") from None
                raise RemoteError(f"HTTP {err.code} from {where}: {detail}") from None
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError):
                    raise RemoteError(f"no answer from {where} within timeout={self.timeout:g} s") from None
                if not isinstance(err.reason, ConnectionRefusedError):
                    raise RemoteError(f"cannot reach {where}: {err.reason}") from None
                last = err  # refused: the request never reached the server, so trying again is safe
                if attempt < self.retries:
                    time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
            except TimeoutError:
                raise RemoteError(f"no answer from {where} within timeout={self.timeout:g} s") from None
            except (ConnectionError, OSError) as err:  # dropped mid-request: it may have been computed, do not resend
                raise RemoteError(f"connection to {where} failed: {err}") from None
        if last is None:
            raise RemoteError(f"no answer from {where} within timeout={self.timeout:g} s")
        raise RemoteError(f"cannot reach {where}: {getattr(last, 'reason', last)}")

    def health(self) -> dict:
        """The server's ``/health``."""
        return self.request("health")

    # ------------------------------------------------------------------------------------- PairRM's methods
    def compare(
        self,
        prompts: Sequence[Any] | None,
        candidates_a: Sequence[Any],
        candidates_b: Sequence[Any],
        *,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> np.ndarray:
        """:meth:`PairRM.compare`: float32 logits, > 0 when ``candidates_a[k]`` is better."""
        return np.asarray(
            self._compare(prompts, candidates_a, candidates_b, mode, instructions, input_format)["logits"],
            dtype=np.float32,
        )

    def compare_proba(
        self,
        prompts: Sequence[Any] | None,
        candidates_a: Sequence[Any],
        candidates_b: Sequence[Any],
        *,
        temperature: float = 1.0,
        mode: str = "symmetric",
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> np.ndarray:
        """:meth:`PairRM.compare_proba`: float32 probability that A is better."""
        temperature = check_positive_number("temperature", temperature)
        out = self._compare(prompts, candidates_a, candidates_b, mode, instructions, input_format, temperature)
        return np.asarray(out["probabilities"], dtype=np.float32)

    def _compare(self, prompts, candidates_a, candidates_b, mode, instructions, input_format, temperature=None):
        sources, texts_a, texts_b = compare_texts(
            prompts, candidates_a, candidates_b, instructions=instructions, input_format=input_format
        )
        payload = {"prompts": sources, "candidates_a": texts_a, "candidates_b": texts_b, "mode": mode}
        if temperature is not None:
            payload["temperature"] = temperature
        out = self.request("compare", payload)
        return _fields(out, "compare", ("logits", "probabilities"), len(sources))

    def rank_batch(
        self,
        prompts: Sequence[Any],
        candidates: Sequence[Sequence[Any]],
        *,
        aggregation: str = "max_logits",
        instructions: Sequence[str] | None = None,
        seed: int = 0,
        input_format: str = "auto",
    ) -> list[Ranking]:
        """:meth:`PairRM.rank_batch`: one :class:`~pairrm_hf.Ranking` per prompt (``matrix`` included)."""
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        candidates = [list(c) for c in candidates]  # the caller's candidates, returned in the rankings
        out = self.request(
            "rank",
            {
                "prompts": sources,
                "candidates": texts,
                "aggregation": aggregation,
                "seed": seed,
                "return_matrix": True,
            },
        )
        rankings = []
        for item, cands in zip(_fields(out, "rank", ("rankings",), len(sources))["rankings"], candidates):
            if not isinstance(item, Mapping) or not {"scores", "ranks", "comparisons"} <= set(item):
                raise RemoteError(f"{self.url}/rank answered a ranking without scores, ranks and comparisons")
            matrix = None if item.get("matrix") is None else np.asarray(item["matrix"], dtype=np.float32)
            rankings.append(
                Ranking(
                    np.asarray(item["scores"], dtype=np.float32),
                    np.asarray(item["ranks"], dtype=np.int32),
                    matrix,
                    item["comparisons"],
                    cands,
                )
            )
        return rankings

    def rank(
        self,
        prompt: Any,
        candidates: Sequence[Any],
        *,
        aggregation: str = "max_logits",
        top_k: int | None = None,
        instruction: str | None = None,
        input_format: str = "auto",
    ) -> list[RankedCandidate]:
        """:meth:`PairRM.rank`: the candidates best first, with the same checks (:func:`~pairrm_hf.ranking.ranker.rank_one`)."""
        return rank_one(
            self,
            prompt,
            candidates,
            aggregation=aggregation,
            top_k=top_k,
            instruction=instruction,
            input_format=input_format,
        )

    def comparison_matrices(
        self,
        prompts: Sequence[Any],
        candidates: Sequence[Sequence[Any]],
        *,
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> list[np.ndarray]:
        """:meth:`PairRM.comparison_matrices`: float32 ``[n, n]`` logits per prompt."""
        rankings = self.rank_batch(prompts, candidates, instructions=instructions, input_format=input_format)
        return [r.matrix for r in rankings]

    def rank_with_ref(
        self,
        prompts: Sequence[Any],
        candidates: Sequence[Sequence[Any]],
        *,
        ref_mode: str = "longest",
        references: Sequence[Any] | None = None,
        instructions: Sequence[str] | None = None,
        input_format: str = "auto",
    ) -> list[np.ndarray]:
        """:meth:`PairRM.rank_with_ref`: float64 rewards against each prompt's reference."""
        if references is None and ref_mode not in REF_MODES:
            raise ValueError(f"ref_mode must be one of {REF_MODES}, got {ref_mode!r}")
        sources, texts = batch_texts(prompts, candidates, instructions=instructions, input_format=input_format)
        payload: dict[str, Any] = {"prompts": sources, "candidates": texts, "ref_mode": ref_mode}
        if references is not None:
            if isinstance(references, (str, bytes)) or not isinstance(references, Sequence):
                raise TypeError(f"references must be a list, got {type(references).__name__}")
            if len(references) != len(sources):
                raise ValueError(
                    f"references has {len(references)} items but prompts has {len(sources)}; they must match"
                )
            ref_sources, ref_lists = batch_texts(
                prompts,
                [[r] for r in references],
                instructions=instructions,
                input_format=input_format,
                candidates_name="references",
            )
            for k, (src, ref_src) in enumerate(zip(sources, ref_sources)):
                if src != ref_src:
                    raise ValueError(f"references[{k}] must have the same user turns as candidates[{k}]")
            payload["references"] = [r[0] for r in ref_lists]
        out = self.request("score", payload)
        return [np.asarray(r, dtype=np.float64) for r in _fields(out, "score", ("rewards",), len(sources))["rewards"]]


def _read(response, deadline: float) -> bytes:
    """The response body, read in pieces so that a server trickling bytes cannot outlast the deadline."""
    body = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer did not arrive in time")
        chunk = response.read(65536)
        if not chunk:
            return bytes(body)
        body += chunk


def _json_object(body: bytes, where: str) -> dict:
    try:
        out = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RemoteError(f"{where} answered {body[:80]!r}, not JSON: is this a pairrm server?") from None
    if not isinstance(out, dict):
        raise RemoteError(f"{where} answered a JSON {type(out).__name__}, not an object: is this a pairrm server?")
    return out


def _fields(out: dict, endpoint: str, names: tuple[str, ...], count: int) -> dict:
    """``out`` when it has list ``names`` of ``count`` items each (the server's answer to ``count`` inputs)."""
    for name in names:
        value = out.get(name)
        if not isinstance(value, list) or len(value) != count:
            raise RemoteError(f"/{endpoint} answered without {name!r} for each of the {count} inputs")
    return out


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
    return reference_rewards(_client(url, api_key), [_prompt(extra_info, prompt_key)], [solution_str], [ground_truth])[
        0
    ]


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
    return reference_rewards(
        _client(url, api_key), [_prompt(i, prompt_key) for i in infos], solution_strs, ground_truths
    )

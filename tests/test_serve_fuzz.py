"""Fuzzing `pairrm serve` on loopback: hypothesis over the request schemas (valid shapes, each field swapped for any
JSON value) and schemathesis against ``/openapi.json``. Every answer must be JSON with a status below 500; bounded
to a few hundred requests on a tiny model with tiny limits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pairrm_hf import PairRM  # noqa: E402
from pairrm_hf.serve.app import BackgroundServer, create_app  # noqa: E402
from pairrm_hf.serve.protocol import Limits, request_schemas  # noqa: E402
from pairrm_hf.serve.service import PairRMService  # noqa: E402

LIMITS = Limits(max_items=3, max_candidates=4, max_pairs=40)
STATUSES: Counter = Counter()  # every status the fuzzers saw, for the closing assertion

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
SHORT_TEXT = st.text(max_size=12)


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values that fit ``schema`` (the small JSON Schema subset of :func:`request_schemas`), bounds stretched by
    one on either side so that the limits themselves are fuzzed."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | SHORT_TEXT
    kind = schema.get("type")
    if kind == "object":
        required = {k: from_schema(schema["properties"][k]) for k in schema["required"]}
        optional = {k: from_schema(v) for k, v in schema["properties"].items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        low = max(0, schema.get("minItems", 0) - 1)
        return st.lists(from_schema(schema["items"]), min_size=low, max_size=schema.get("maxItems", 3) + 1)
    if kind == "integer":
        return st.integers(min_value=schema["minimum"] - 1, max_value=schema["maximum"] + 1)
    if kind == "number":
        return st.floats() | st.integers(min_value=-(10**400), max_value=10**400)
    if kind == "boolean":
        return st.booleans()
    if isinstance(kind, list):  # ["string", "null"]
        return st.none() | SHORT_TEXT
    return SHORT_TEXT


def mutated(schema: dict) -> st.SearchStrategy:
    """A valid-shaped body, or one with a field replaced by (or added as) any JSON value."""
    base = from_schema(schema)
    names = [*schema["properties"], "extra"]
    swap = st.tuples(base, st.sampled_from(names), JSON).map(lambda t: {**t[0], t[1]: t[2]})
    return base | swap | JSON


@pytest.fixture(scope="module")
def fuzz_server(tiny_hf_dir):
    svc = PairRMService(PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=8), max_wait_ms=1.0, limits=LIMITS)
    with BackgroundServer(create_app(svc, max_body_bytes=64 * 1024, body_timeout=5.0)) as srv:
        yield srv
    svc.close()


def check(response) -> None:
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        assert set(answer) == {"error", "field"} and answer["error"], answer


@pytest.mark.parametrize("endpoint", ["rank", "compare", "score", "get_reward"])
def test_hypothesis_request_bodies(fuzz_server, endpoint):
    schema = request_schemas(LIMITS)[endpoint]
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as client:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(body=mutated(schema))
        def run(body) -> None:
            check(client.post(f"/{endpoint}", content=json.dumps(body).encode()))

        run()


@given(raw=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_hypothesis_raw_bytes(fuzz_server, raw):
    check(httpx.post(f"{fuzz_server.url}/rank", content=raw, timeout=60))


@pytest.fixture(scope="module")
def openapi(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("openapi")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_schemathesis_openapi(case):
    response = case.call(timeout=60)
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, response.text


def test_fuzz_summary(fuzz_server):
    """Runs last in this module: the fuzzers reached the server, and it answered every request below 500."""
    seen = sum(STATUSES.values())
    assert seen >= 200 and not any(code >= 500 for code in STATUSES), STATUSES
    assert STATUSES[200] > 0 and sum(n for code, n in STATUSES.items() if 400 <= code < 500) > 0, STATUSES
    metrics = httpx.get(f"{fuzz_server.url}/metrics").json()
    assert not any(code.startswith("5") for by in metrics["requests"].values() for code in by), metrics["requests"]

"""`pairrm serve` under abuse (issue 21, items 1-4 and 12): the per-request cost limit, cancellation between
forward batches, fair steps and tokenizing, body-read timeouts, 4xx instead of 500, small protocol gaps, and
``RemotePairRM`` behaving like ``PairRM``. Loopback only; every loop is bounded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from pairrm_hf import PairRM  # noqa: E402
from pairrm_hf.serve.app import BackgroundServer, create_app  # noqa: E402
from pairrm_hf.serve.batcher import Cancelled, RequestScope  # noqa: E402
from pairrm_hf.serve.client import RemoteError, RemotePairRM  # noqa: E402
from pairrm_hf.serve.protocol import Limits, RequestError, get_reward, method_pairs  # noqa: E402
from pairrm_hf.serve.service import PairRMService  # noqa: E402

TOL = 1e-5
KEY = "clé-ключ-🔑"


@pytest.fixture(scope="module")
def service(tiny_hf_dir):
    svc = PairRMService(
        PairRM.from_pretrained(tiny_hf_dir, device="cpu", batch_size=4),
        max_wait_ms=5.0,
        limits=Limits(max_items=64, max_candidates=64, max_pairs=5000),
    )
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def server(service):
    with BackgroundServer(create_app(service, max_body_bytes=4 * 2**20)) as srv:
        yield srv


def close(a, b) -> bool:
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=TOL, rtol=0)


def post(url: str, endpoint: str, body, headers: dict | None = None, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(f"{url}/{endpoint}", content=content, headers=headers, **kwargs)


def metrics(url: str, **kwargs) -> dict:
    return httpx.get(f"{url}/metrics", **kwargs).json()


def raw_request(port: int, head: bytes, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body)
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def big_rank(n: int = 64) -> dict:
    return {"prompts": ["slow"], "candidates": [[f"candidate {i} " + "word " * (i % 7) for i in range(n)]]}


# ----------------------------------------------------------------------------------------------- item 1
def test_cost_limit_counts_each_methods_real_pairs(server, tiny_rm):
    """The price is the method's real cost: each schedule's own comparison count, never more (sort: at most)."""
    cands = [f"answer {i}" + "!" * i for i in range(9)]
    for method in ("max_logits", "max_wins", "bubble", "reference", "sort", "knockout"):
        made = tiny_rm.rank_batch(["q"], [cands], aggregation=method)[0].comparisons
        assert made == method_pairs(method, 9) if method != "sort" else made <= method_pairs(method, 9), method
    # 2 prompts x 64 candidates ranked in full: 8064 ordered pairs > 5000: refused before any work
    before = metrics(server.url)["batcher"]["pairs"]
    body = {"prompts": ["a", "b"], "candidates": big_rank()["candidates"] * 2}
    r = post(server.url, "rank", body)
    assert r.status_code == 413 and r.json()["field"] == "candidates" and "8,064" in r.json()["error"]
    assert metrics(server.url)["batcher"]["pairs"] == before
    # the same candidates with a budgeted method cost 2 * 2 * 64 pairs: accepted
    assert post(server.url, "rank", {**body, "aggregation": "reference"}, timeout=60).status_code == 200
    many = {"prompts": ["q"] * 64, "candidates_a": ["a"] * 64, "candidates_b": ["b"] * 64}
    assert post(server.url, "compare", many, timeout=60).status_code == 200  # 128 pairs
    group = {"query": [f"q{i}" for i in range(12)], "prompts": ["q"] * 12}  # one group of 12: 132 pairs
    assert post(server.url, "get_reward", group, timeout=60).status_code == 200
    with pytest.raises(RequestError) as err:  # priced before any work: a model call would fail on None
        get_reward(None, {**group, "labels": ["ref"] + [None] * 11}, Limits(max_pairs=2 + 11 * 10 - 1))
    assert err.value.status == 413 and err.value.field == "query" and "112" in str(err.value)


def test_cancel_stops_within_a_step_and_small_requests_do_not_wait(service, tiny_rm):
    """A 4032-pair job runs in steps of one forward batch: a 1-pair request sent meanwhile is answered while the big
    one is still running, and cancelling the big one stops it before its next step."""
    batcher = service.batcher
    scope = RequestScope()
    big_out: dict = {}

    def big() -> None:
        try:
            big_out["value"] = service.handle("rank", big_rank(), scope)
        except Cancelled as err:
            big_out["value"] = err

    thread = threading.Thread(target=big)
    start_batches = batcher.stats.batches
    thread.start()
    deadline = time.time() + 60
    while batcher.stats.batches < start_batches + 3 and time.time() < deadline:
        time.sleep(0.001)
    small = service.handle("compare", {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"]})
    assert thread.is_alive(), "the 1-pair request waited for the whole 4032-pair request"
    assert close(small["logits"], tiny_rm.compare(["q"], ["a"], ["b"]))
    pairs_at_cancel = batcher.stats.pairs
    scope.cancel()
    thread.join(60)
    assert isinstance(big_out["value"], Cancelled)
    # at most the step that was running when the flag was set
    assert batcher.stats.pairs - pairs_at_cancel <= batcher.step_pairs
    assert batcher.stats.cancelled_pairs > 3000
    assert batcher.queued == 0


def test_client_that_leaves_stops_its_work(server, service):
    """Over HTTP: the client gives up after 0.3 s; its work is dropped and counted as 499, not finished."""
    before = metrics(server.url)
    with pytest.raises(httpx.TimeoutException):
        post(server.url, "rank", big_rank(), timeout=0.3)
    deadline = time.time() + 30
    while metrics(server.url)["pending"] and time.time() < deadline:
        time.sleep(0.05)
    after = metrics(server.url)
    assert after["pending"] == 0 and after["batcher"]["queued_jobs"] == 0
    assert after["batcher"]["cancelled_jobs"] == before["batcher"]["cancelled_jobs"] + 1
    assert after["requests"]["rank"].get("499", 0) == before["requests"].get("rank", {}).get("499", 0) + 1
    assert "500" not in after["requests"]["rank"]


def test_remote_does_not_resend_a_request_that_timed_out():
    """A server that accepts and never answers: one connection, and the call ends after `timeout`, not 4x it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        rm = RemotePairRM(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0, retries=3)
        start = time.perf_counter()
        with pytest.raises(RemoteError, match="within timeout=1 s"):
            rm.compare(["q"], ["a"], ["b"])
        assert time.perf_counter() - start < 3.0  # was 4 x (timeout + 1 s): 11 s for timeout=2
        time.sleep(0.3)
        assert len(accepted) == 1
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


# ----------------------------------------------------------------------------------------------- item 2
def test_stalled_uploads_hold_slots_only_until_the_body_timeout(service):
    app = create_app(service, max_pending=2, body_timeout=0.5)
    with BackgroundServer(app) as srv:
        head = b"POST /rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        stalled = [raw_request(srv.port, head, b'{"pro') for _ in range(2)]
        try:
            time.sleep(0.1)
            good = {"prompts": ["q"], "candidates": [["a", "b"]]}
            assert post(srv.url, "rank", good).status_code == 503  # both slots held by stalled uploads
            assert [read_status(s) for s in stalled] == [408, 408]  # within the body timeout
            assert metrics(srv.url)["pending"] == 0
            assert post(srv.url, "rank", good, timeout=30).status_code == 200
        finally:
            for sock in stalled:
                sock.close()


def test_a_huge_text_does_not_hold_up_other_requests_tokenizing(service):
    """One request tokenizing ~1.6 MB while another tokenizes a few words: the small one does not queue behind it."""
    huge = " ".join(f"word{i % 997}" for i in range(200_000))
    view = service.view(RequestScope())
    done: dict = {}
    thread = threading.Thread(target=lambda: done.setdefault("big", view.engine.encode([huge], [["a"]])))
    thread.start()
    time.sleep(0.05)
    small = view.engine.encode(["q"], [["a", "b"]])
    still_tokenizing = thread.is_alive()
    thread.join(120)
    assert still_tokenizing, "the small request waited for the huge one's tokenizing"
    assert small[0].candidates == service.rm.engine.encode(["q"], [["a", "b"]])[0].candidates


# ----------------------------------------------------------------------------------------------- item 3
@pytest.mark.parametrize(
    "endpoint, body, status, field",
    [
        ("rank", b"[" * 100_000 + b"]" * 100_000, 400, "body"),  # RecursionError
        ("rank", b'{"prompts": ["q"], "candidates": [["a"]], "seed": NaN}', 400, "body"),
        ("rank", b'{"prompts": ["q"], "candidates": [["a"]], "seed": ' + b"9" * 5000 + b"}", 400, "body"),
        (
            "compare",
            {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"], "temperature": 10**400},
            422,
            "temperature",
        ),
        (
            "compare",
            b'{"prompts":["q"],"candidates_a":["a"],"candidates_b":["b"],"temperature":1e400}',
            422,
            "temperature",
        ),
        ("rank", {"prompts": ["q"], "candidates": [["a", "b"]], "aggregation": "bubble", "seed": 2**70}, 422, "seed"),
    ],
    ids=["deep-nesting", "nan", "5000-digit-seed", "400-digit-temperature", "1e400-temperature", "seed-2**70"],
)
def test_hostile_numbers_and_nesting_are_4xx(server, endpoint, body, status, field):
    r = post(server.url, endpoint, body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


def test_largest_seed_still_ranks(server, tiny_rm):
    body = {"prompts": ["q"], "candidates": [["a", "bb", "c"]], "aggregation": "bubble", "seed": 2**64 - 1}
    r = post(server.url, "rank", body, timeout=30)
    direct = tiny_rm.rank_batch(["q"], [["a", "bb", "c"]], aggregation="bubble", seed=2**64 - 1)[0]
    assert r.status_code == 200 and r.json()["rankings"][0]["ranks"] == direct.ranks.tolist()


# ----------------------------------------------------------------------------------------------- item 4
def test_upload_disconnect_is_499_not_500(server):
    before = metrics(server.url)["requests"].get("score", {})
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    raw_request(server.port, head, b'{"prompts": ').close()
    deadline = time.time() + 10
    while metrics(server.url)["requests"].get("score", {}).get("499", 0) == before.get("499", 0):
        assert time.time() < deadline, "the disconnect was not recorded"
        time.sleep(0.05)
    assert metrics(server.url)["requests"]["score"].get("500", 0) == before.get("500", 0)


def test_protocol_gaps(server):
    url = server.url
    r = httpx.get(f"{url}/rank")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert httpx.post(f"{url}/health").headers["allow"] == "GET"
    spec = httpx.get(f"{url}/openapi.json").json()
    for endpoint in ("rank", "compare", "score", "get_reward"):
        schema = spec["paths"][f"/{endpoint}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object" and schema["required"]
    assert spec["paths"]["/rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "aggregation"
    ]["enum"] == ["max_logits", "max_wins", "bubble", "reference", "sort", "knockout"]
    assert httpx.get(f"{url}/docs").status_code == 200
    r = httpx.get(f"{url}/metrics", params={"format": "xml"})
    assert r.status_code == 422 and r.json()["field"] == "format"
    post(url, "compare", {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"]}, timeout=30)
    text = httpx.get(f"{url}/metrics", params={"format": "prometheus"}).text
    assert "# TYPE pairrm_requests_total counter" in text and "# HELP pairrm_requests_total" in text
    assert 'quantile="0.5"' in text and 'quantile="0.99"' in text and 'quantile="p' not in text
    # every sample line belongs to a family declared with # TYPE
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            assert any(name == f or name.startswith(f + "_") for f in families), line


def test_health_and_utf8_api_key(service, tiny_hf_dir):
    with BackgroundServer(create_app(service, api_key=KEY)) as srv:
        public = httpx.get(f"{srv.url}/health").json()
        assert public == {"status": "ok"}  # no model path, no pid without the key
        auth = {"Authorization": f"Bearer {KEY}".encode()}  # the key's UTF-8 bytes, as clients send them
        full = httpx.get(f"{srv.url}/health", headers=auth).json()
        assert full["pid"] > 0 and full["model"] == tiny_hf_dir.name and str(tiny_hf_dir) not in json.dumps(full)
        body = {"prompts": ["q"], "candidates_a": ["a"], "candidates_b": ["b"]}
        assert post(srv.url, "compare", body, headers=auth).status_code == 200
        assert httpx.post(f"{srv.url}/compare", json=body, headers={"X-Api-Key": KEY.encode()}).status_code == 200
        latin1_lookalike = KEY.encode().decode("latin-1").encode("utf-8")  # the key's text sent as Latin-1
        assert httpx.post(f"{srv.url}/compare", json=body, headers={"X-Api-Key": latin1_lookalike}).status_code == 401
        assert RemotePairRM(srv.url, api_key=KEY, retries=0).compare(["q"], ["a"], ["b"]).shape == (1,)


@pytest.mark.slow
def test_port_in_use_fails_before_loading_the_model(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        missing = tmp_path / "no-model-here"  # would fail to load: the bind must fail first
        done = subprocess.run(
            [sys.executable, "-m", "pairrm_hf.cli", "serve", "--model", str(missing), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in done.stdout and "in use" in done.stdout
    finally:
        busy.close()


# ----------------------------------------------------------------------------------------------- item 12
def test_remote_checks_like_pairrm_before_sending():
    rm = RemotePairRM("http://127.0.0.1:9", retries=0)  # nothing listens there: the checks must come first
    for top_k in (True, 0, 5):
        with pytest.raises(ValueError, match="top_k"):
            rm.rank("q", ["a", "b"], top_k=top_k)
    with pytest.raises(ValueError, match="candidates_b"):
        rm.compare(["q"], ["a"], ["b", "c"])
    with pytest.raises(TypeError, match="prompt"):
        rm.rank(3, ["a", "b"])
    for temperature in (0, -1.0, float("nan"), True):  # the same refusals as PairRM.compare_proba
        with pytest.raises(ValueError, match="temperature must be > 0"):
            rm.compare_proba(["q"], ["a"], ["b"], temperature=temperature)
    for bad in ("file:///etc/passwd", "127.0.0.1:8000", "ftp://host"):
        with pytest.raises(ValueError, match="url"):
            RemotePairRM(bad)


def test_remote_takes_chats_like_pairrm(server, tiny_rm):
    remote = RemotePairRM(server.url, retries=0)
    chats = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]]
    answers = [["4", [{"role": "assistant", "content": "four"}], "5"]]
    served, direct = remote.rank_batch(chats, answers)[0], tiny_rm.rank_batch(chats, answers)[0]
    assert close(served.scores, direct.scores) and served.candidates == answers[0]
    top = remote.rank(chats[0], answers[0], top_k=1)
    assert len(top) == 1 and top[0].index == tiny_rm.rank(chats[0], answers[0], top_k=1)[0].index
    assert close(remote.compare(chats, ["4"], ["5"]), tiny_rm.compare(chats, ["4"], ["5"]))
    convs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": x}] for x in ("hello", "go away")]
    assert close(remote.compare(None, [convs[0]], [convs[1]]), tiny_rm.compare(None, [convs[0]], [convs[1]]))
    assert close(
        remote.rank_with_ref(chats, answers, references=["four"])[0],
        tiny_rm.rank_with_ref(chats, answers, references=["four"])[0],
    )
    assert close(
        remote.rank_batch(["q"], [["a", "b"]], input_format="conversation")[0].scores,
        tiny_rm.rank_batch(["q"], [["a", "b"]], input_format="conversation")[0].scores,
    )


def test_remote_names_a_server_that_is_not_pairrm():
    """A 200 answer that is not JSON (or not an object) is a RemoteError that says so, not a JSONDecodeError."""
    answers = iter([b"hello", b"[1, 2]", b'{"rankings": "x"}'])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        for body in answers:
            conn = listener.accept()[0]
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        rm = RemotePairRM(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=0, timeout=10)
        with pytest.raises(RemoteError, match="not JSON"):
            rm.compare(["q"], ["a"], ["b"])
        with pytest.raises(RemoteError, match="not an object"):
            rm.compare(["q"], ["a"], ["b"])
        with pytest.raises(RemoteError, match="rankings"):
            rm.rank_batch(["q"], [["a", "b"]])
    finally:
        thread.join(10)
        listener.close()

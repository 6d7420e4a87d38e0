"""`pairrm demo` driven as a person would: headless Chromium fills the form, clicks Rank, reads the ranking."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
FUSE = {"max_new_tokens": 8, "num_beams": 1}  # a short greedy fusion: the tiny fuser is slow on a shared CPU
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="needs a system chromium")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_in_headless_chromium(tiny_hf_dir, tiny_rm, tmp_path, monkeypatch):
    from pairrm_hf.generation.fusion import fuse_generate, load_fuser
    from pairrm_hf.serve.demo import build_demo
    from tests.conftest import ORACLE_FUSER

    # The model picker shows the name it was given: serve the tiny model under the published id (a local folder of
    # that name wins over the Hub), so the screenshot docs/demo.png shows no path of the machine that took it.
    (tmp_path / "llm-blender").mkdir()
    (tmp_path / "llm-blender" / "PairRM-hf").symlink_to(tiny_hf_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    demo = build_demo(["llm-blender/PairRM-hf"], fuser=str(ORACLE_FUSER), device="cpu", fuse_kwargs=FUSE)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    prompt = "Which city is the capital of France?"
    answers = ["Paris is the capital of France.", "Berlin.", "I think it is Lyon, or maybe Marseille.", "Paris"]
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            page.locator("#pairrm-prompt textarea").fill(prompt)
            page.locator("#pairrm-candidates textarea").fill("\n".join(answers))
            page.locator("#pairrm-run").click()
            page.wait_for_selector("#pairrm-ranking tr.pairrm-rank", timeout=60_000)
            rows = page.locator("#pairrm-ranking tr.pairrm-rank").all_inner_texts()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            matrix_cells = page.locator("#pairrm-matrix tr").count()
            win_cells = page.locator("#pairrm-win td").all_inner_texts()
            fused = page.locator("#pairrm-fused textarea").input_value()
            browser.close()
    finally:
        demo.close()
    expected = tiny_rm.rank(prompt, answers)
    assert len(rows) == len(answers)
    for row, r in zip(rows, expected):
        rank, score, index, text = row.split("\t")
        assert int(rank) == r.rank and int(index) == r.index + 1 and text.strip() == answers[r.index]
        assert abs(float(score) - r.score) < 1e-4  # shown with 4 decimals
    assert matrix_cells == len(answers) + 1  # header row + one row per answer
    probabilities = [float(x) for x in win_cells if x.strip() != "–"]
    assert len(probabilities) == len(answers) * (len(answers) - 1) and all(0 <= x <= 1 for x in probabilities)
    model, tokenizer = load_fuser(ORACLE_FUSER, device="cpu", dtype="float32")
    top3 = [answers[r.index] for r in expected[:3]]
    assert fused == fuse_generate(model, tokenizer, [prompt], [top3], **FUSE)[0]
    if os.environ.get("PAIRRM_DEMO_SCREENSHOT"):  # refresh docs/demo.png on purpose only
        shutil.copy(tmp_path / "demo.png", os.environ["PAIRRM_DEMO_SCREENSHOT"])

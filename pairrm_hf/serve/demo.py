"""``pairrm demo``: a Gradio page to look at a PairRM ranking (needs the ``demo`` extra: ``pip install gradio``).

A prompt (or a chat as JSON messages), N candidate answers and a model picker give: the ranked list with scores,
the n×n comparison matrix ``C[i, j]`` as a heat map, the probability that each answer beats each other one
(``sigmoid(C[i, j] − C[j, i])``) and, when a fuser is given, the fused answer of the best three. Texts go through
the one input rule (:func:`pairrm_hf.ranking.inputs.answer_set_texts`) and models load once (:func:`shared_pairrm`).

``quantize="int8"`` (``pairrm demo --quantize int8``, optionally ``--calibration FILE.jsonl``) serves every model of
the picker in int8 on the CPU, as ``pairrm serve --quantize`` does; the options and calibration rows are checked
when the page is built, before it is served.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..jobs.runner import checked_load_calibration
from ..ranking.inputs import answer_set_texts
from ..ranking.openvino_backend import requested_backend
from ..ranking.quantization import check_quantize
from ..ranking.ranker import shared_pairrm
from ..ranking.rewards import symmetric_matrix, win_probability

__all__ = ["build_demo", "rank_view", "split_candidates"]

_SEPARATOR = "---"


def split_candidates(text: str) -> list[str]:
    """Candidates from the text box: separated by lines of ``---`` when there are any, else one per line."""
    lines = text.splitlines()
    if any(line.strip() == _SEPARATOR for line in lines):
        blocks, current = [], []
        for line in lines + [_SEPARATOR]:
            if line.strip() == _SEPARATOR:
                blocks.append("\n".join(current).strip())
                current = []
            else:
                current.append(line)
        return [b for b in blocks if b]
    return [line.strip() for line in lines if line.strip()]


def _color(value: float, scale: float) -> str:
    # blue for > 0 (row answer preferred), red for < 0; white at 0
    t = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    shade = int(255 - 155 * t)
    return f"rgb({shade},{shade},255)" if value > 0 else f"rgb(255,{shade},{shade})"


def _matrix_html(
    table_id: str, caption: str, values: np.ndarray, labels: Sequence[str], fmt: str, center: float
) -> str:
    scale = float(np.abs(values - center).max()) or 1.0
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = []
    for i, label in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            if i == j:
                cells.append('<td style="background:#eee">–</td>')
            else:
                v = float(values[i, j])
                cells.append(f'<td style="background:{_color(v - center, scale)}">{format(v, fmt)}</td>')
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return (
        f'<table id="{table_id}" class="pairrm-matrix"><caption>{html.escape(caption)}</caption>'
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def rank_view(rm, prompt: str | list, candidates: Sequence[str]) -> dict[str, Any]:
    """Ranking, comparison matrix and win probabilities of ``candidates`` for ``prompt`` (str or messages)."""
    source, texts = answer_set_texts(prompt, list(candidates), name="candidates")
    ranking = rm.rank_batch([source], [texts])[0]
    c = ranking.matrix.astype(np.float64)
    win = win_probability(symmetric_matrix(c))
    return {"source": source, "ranking": ranking, "matrix": c, "win_probability": win}


def _ranking_html(view: dict, candidates: Sequence[str]) -> str:
    rows = "".join(
        f'<tr class="pairrm-rank"><td>{r.rank}</td><td>{r.score:+.4f}</td><td>{r.index + 1}</td>'
        f"<td>{html.escape(candidates[r.index])}</td></tr>"
        for r in view["ranking"].ranked()
    )
    return f'<table id="pairrm-ranking"><tr><th>rank</th><th>score</th><th>#</th><th>answer</th></tr>{rows}</table>'


def build_demo(
    models: Sequence[str],
    *,
    fuser: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    fuse_kwargs: dict | None = None,
    backend: str | None = None,
    backbone_config: str | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    calibration_size: int | None = None,
):
    """The Gradio Blocks app; ``models`` fill the model picker (any layout pairrm-hf loads).

    ``fuse_kwargs`` go to :func:`pairrm_hf.generation.fusion.fuse_generate` (e.g. ``max_new_tokens``, ``num_beams``).
    ``backend``, ``backbone_config``, ``quantize``, ``calibration`` (a JSONL path or rows) and ``calibration_size``
    are :meth:`PairRM.from_pretrained`'s, for every model of the picker; they are checked here (a bad calibration
    file raises ``ValueError`` naming the file, row and field) and the models load on first use.
    """
    import gradio as gr

    check_quantize(quantize, device)
    requested_backend(backend)
    # read once, now: every model of the picker is calibrated on these rows, and a bad file stops the command
    calibration = checked_load_calibration(
        calibration, calibration_size, quantize=quantize, backend=backend, dtype=dtype
    )
    models = [str(m) for m in models]
    fuser_state: dict[str, Any] = {}

    def fused_answer(source: str, top: list[str]) -> str:
        from ..generation.fusion import fuse_generate, load_fuser

        if "model" not in fuser_state:
            fuser_state["model"], fuser_state["tokenizer"] = load_fuser(fuser, device=device, dtype=dtype or "float32")
        return fuse_generate(fuser_state["model"], fuser_state["tokenizer"], [source], [top], **(fuse_kwargs or {}))[0]

    def run(model: str, prompt: str, chat: str, candidates_text: str):
        candidates = split_candidates(candidates_text or "")
        if not candidates:
            raise gr.Error("Enter at least one candidate answer (one per line, or separated by lines of ---).")
        query: Any = prompt or ""
        if chat and chat.strip():
            try:
                query = json.loads(chat)
            except json.JSONDecodeError as err:
                raise gr.Error(f"The chat is not valid JSON: {err}") from None
        rm = shared_pairrm(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            backbone_config=backbone_config,
            backend=backend,
            quantize=quantize,
            calibration=calibration,
        )
        try:
            view = rank_view(rm, query, candidates)
        except (TypeError, ValueError) as err:
            raise gr.Error(str(err)) from None
        labels = [f"#{k + 1}" for k in range(len(candidates))]
        ranked = _ranking_html(view, candidates)
        matrix = _matrix_html(
            "pairrm-matrix", "Comparison logits C[i, j] (row answer in slot 1)", view["matrix"], labels, "+.3f", 0.0
        )
        proba = _matrix_html(
            "pairrm-win", "P(row answer beats column answer)", view["win_probability"], labels, ".2f", 0.5
        )
        fused = ""
        if fuser:
            top = [candidates[r.index] for r in view["ranking"].ranked()[:3]]
            fused = fused_answer(view["source"], top)
        return ranked, matrix, proba, fused

    with gr.Blocks(title="PairRM ranking") as demo:
        gr.Markdown("## PairRM: rank candidate answers\nRows beat columns where the cell is blue.")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(models, value=models[0], label="Model", elem_id="pairrm-model")
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="pairrm-prompt")
                chat = gr.Textbox(
                    label='Chat instead of a prompt (JSON: [{"role": "user", "content": "..."}])',
                    lines=2,
                    elem_id="pairrm-chat",
                )
                candidates = gr.Textbox(
                    label="Candidate answers (one per line, or separated by lines of ---)",
                    lines=6,
                    elem_id="pairrm-candidates",
                )
                button = gr.Button("Rank", variant="primary", elem_id="pairrm-run")
            with gr.Column():
                ranked = gr.HTML(label="Ranking", elem_id="pairrm-ranking-box")
                fused = gr.Textbox(label="Fused answer (top 3)", visible=bool(fuser), elem_id="pairrm-fused")
        with gr.Row():
            matrix = gr.HTML(label="Comparison matrix C[i, j]", elem_id="pairrm-matrix-box")
            proba = gr.HTML(label="P(row beats column)", elem_id="pairrm-win-box")
        button.click(run, [model, prompt, chat, candidates], [ranked, matrix, proba, fused], api_name="rank")
    return demo

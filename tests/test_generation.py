"""Best-of-n generation through ``Blender`` (upstream's ``n_generate``/``best_of_n_generate``) and the chat-template
rule: a prompt that already carries the template is not wrapped a second time."""

from __future__ import annotations

import pytest
import torch

from pairrm_hf import PairRM
from pairrm_hf.blender import Blender
from pairrm_hf.generation.fusion import load_fuser
from pairrm_hf.generation.sampling import has_chat_template_prefix, model_prompt_texts, sample_n
from pairrm_hf.testing import build_tiny_llama
from tests.conftest import ORACLE_FUSER

PLAIN = ["Write one word.", "Say something nice about cats, please."]
GEN = {"max_new_tokens": 5}


@pytest.fixture(scope="module")
def chat_lm(tmp_path_factory):
    folder = build_tiny_llama(tmp_path_factory.mktemp("llama"), ORACLE_FUSER)
    return load_fuser(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def rendered(chat_lm):
    """The original README's recipe: the caller renders the chat template (with a system turn) before the call."""
    _, tok = chat_lm
    system = {"role": "system", "content": "You are a friendly chatbot."}
    with_system = tok.apply_chat_template(
        [system, {"role": "user", "content": PLAIN[0]}], tokenize=False, add_generation_prompt=True
    )
    user_only = tok.apply_chat_template(
        [{"role": "user", "content": PLAIN[1]}], tokenize=False, add_generation_prompt=True
    )
    return [with_system, user_only]


@pytest.fixture(scope="module")
def blender(tiny_hf_dir):
    # its own PairRM: Blender sets the engine's batch size, and the shared tiny_rm must stay untouched
    return Blender(PairRM.from_pretrained(tiny_hf_dir, device="cpu"))


def test_template_prefix_detection(chat_lm, rendered):
    _, tok = chat_lm
    assert [has_chat_template_prefix(tok, p) for p in rendered] == [True, True]
    assert [has_chat_template_prefix(tok, p) for p in PLAIN] == [False, False]
    assert not has_chat_template_prefix(tok, "<|assistant|> not a first turn")


def test_auto_wraps_plain_prompts_once_and_keeps_rendered_ones(chat_lm, rendered):
    _, tok = chat_lm
    texts, add_special = model_prompt_texts(tok, [PLAIN[1], rendered[0]], "auto")
    assert texts == [rendered[1], rendered[0]] and add_special is False
    forced, _ = model_prompt_texts(tok, [rendered[1]], True)  # explicit True wraps even a rendered prompt
    assert forced[0].count("<|user|>") == 2
    as_given, add_special = model_prompt_texts(tok, rendered, False)
    assert as_given == rendered and add_special is True
    no_template = type(tok).from_pretrained(str(ORACLE_FUSER))
    assert model_prompt_texts(no_template, PLAIN, "auto") == (PLAIN, True)
    with pytest.raises(ValueError, match="no chat template"):
        model_prompt_texts(no_template, PLAIN, True)


def test_rendered_and_plain_prompts_give_the_same_samples(chat_lm, rendered):
    model, tok = chat_lm
    torch.manual_seed(0)
    from_plain = sample_n(model, tok, PLAIN[1:], n=3, **GEN)
    torch.manual_seed(0)
    from_rendered = sample_n(model, tok, rendered[1:], n=3, **GEN)
    torch.manual_seed(0)
    from_none = sample_n(model, tok, rendered[1:], n=3, use_chat_template=None, **GEN)
    assert from_plain == from_rendered == from_none


def test_blender_best_of_n_generate(chat_lm, rendered, blender):
    model, tok = chat_lm
    ranker = blender.ranker
    for cmp_type in ("bubble", "full"):
        torch.manual_seed(0)
        samples = blender.n_generate(model, tok, rendered, n=3, **GEN)
        assert [len(s) for s in samples] == [3, 3]
        torch.manual_seed(0)
        best = blender.best_of_n_generate(model, tok, rendered, n=3, pairrm_cmp_type=cmp_type, **GEN)
        # ranked against the prompts as given, as upstream did
        assert best == ranker.best_of_n(rendered, samples, method=cmp_type)
    torch.manual_seed(0)
    every = blender.best_of_n_generate(model, tok, rendered, n=3, pairrm_cmp_type="full", return_all=True, **GEN)
    assert [sorted(x) for x in every] == [sorted(s) for s in samples]
    assert [x[0] for x in every] == ranker.best_of_n(rendered, samples, method="full")


def test_blender_sampling_modes(chat_lm, blender):
    model, tok = chat_lm
    out = blender.best_of_n_generate(model, tok, PLAIN, n=2, sampling_mode="top_k_sampling", **GEN)
    assert len(out) == 2 and all(isinstance(x, str) for x in out)
    greedy = blender.n_generate(model, tok, PLAIN[:1], n=1, sampling_mode=None, do_sample=False, **GEN)
    assert greedy == blender.n_generate(model, tok, PLAIN[:1], n=1, sampling_mode=None, do_sample=False, **GEN)
    with pytest.raises(ValueError, match="sampling_mode"):
        blender.n_generate(model, tok, PLAIN, sampling_mode="beam")
    with pytest.raises(ValueError, match="use_chat_template"):
        blender.n_generate(model, tok, PLAIN, use_chat_template="yes")
    with pytest.raises(ValueError, match="method"):
        blender.best_of_n_generate(model, tok, PLAIN, pairrm_cmp_type="vote")

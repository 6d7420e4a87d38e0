"""Training: backbone init (both key layouts), data handling, the collator, a real learning run, save/load round trip."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pairrm_hf import PairRM, save_pairrm
from pairrm_hf.data.mixinstruct import MixInstructExample, load_mixinstruct, mixinstruct_to_pairs
from pairrm_hf.ranking.inputs import preference_texts
from pairrm_hf.tokenization.tokenization_pairrm import PREFIX_TOKENS, PairEncoder, PairLengths
from pairrm_hf.training import PairRMDataCollator, init_pairrm_from_backbone, train_pairrm

# ------------------------------------------------------------------------------------------------ backbone init


def _check_backbone_loaded(model, backbone_dir):
    state = load_file(str(backbone_dir / "model.safetensors"))
    mine = model.pretrained_model.state_dict()
    for key, tensor in state.items():
        key = key.removeprefix("deberta.")
        if key == "embeddings.word_embeddings.weight":
            assert torch.equal(mine[key][: tensor.shape[0]], tensor)
        else:
            assert torch.equal(mine[key], tensor), key


def test_init_from_backbone_prefixless_keys(tiny_backbone_dir):
    model, tok = init_pairrm_from_backbone(tiny_backbone_dir)
    _check_backbone_loaded(model, tiny_backbone_dir)
    vocab = tok.get_vocab()
    assert [vocab[t] for t in PREFIX_TOKENS] == [4001, 4002, 4003, 4004]
    assert model.prefix_ids == (4001, 4002, 4003)
    assert model.config.vocab_size == 4100  # ids fit in DeBERTa-v3's spare rows: no resize, as upstream's checkpoints
    out = model(**PairRMDataCollator(tok)([{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."}]))
    assert out.logits.shape == (2,)


def test_init_from_backbone_deberta_prefixed_keys_and_resize(tiny_backbone_dir, tmp_path):
    # microsoft/deberta-v3-* store `deberta.`-prefixed keys (DebertaV2ForMaskedLM); and a vocab with no spare rows
    folder = tmp_path / "mlm"
    folder.mkdir()
    state = load_file(str(tiny_backbone_dir / "model.safetensors"))
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][:4001].clone()
    save_file({"deberta." + k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = json.loads((tiny_backbone_dir / "config.json").read_text())
    config.update(architectures=["DebertaV2ForMaskedLM"], vocab_size=4001)
    (folder / "config.json").write_text(json.dumps(config))
    model, tok = init_pairrm_from_backbone(folder, tokenizer_path=tiny_backbone_dir)
    _check_backbone_loaded(model, folder)
    assert model.config.vocab_size == len(tok) == 4005
    assert model.get_input_embeddings().weight.shape[0] == 4005


def test_init_from_backbone_rejects_non_deberta(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2", "hidden_size": 8}))
    with pytest.raises((OSError, ValueError)):
        init_pairrm_from_backbone(tmp_path)


# ------------------------------------------------------------------------------------------------ data


def test_preference_texts_standard_and_conversational():
    assert preference_texts({"prompt": "p", "chosen": "a", "rejected": "b"}) == ("p", "a", "b")
    conv = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "A"}],
        "rejected": [{"role": "assistant", "content": "B"}],
    }
    src, a, b = preference_texts(conv)
    assert a == "<Response 1>: A" and b == "<Response 1>: B" and "USER: hi" in src
    implicit = {"chosen": conv["prompt"] + conv["chosen"], "rejected": conv["prompt"] + conv["rejected"]}
    assert preference_texts(implicit) == (src, a, b)
    with pytest.raises(ValueError, match="row 3 has no 'rejected'"):
        preference_texts({"prompt": "p", "chosen": "a"}, 3)
    with pytest.raises(TypeError, match="row 0 'prompt' must be a str .*None only when the answers are whole"):
        preference_texts({"chosen": "a", "rejected": "b"})
    with pytest.raises(TypeError, match="row 0 'rejected' must be a str or a list of .*messages, got int"):
        preference_texts({"prompt": "p", "chosen": "a", "rejected": 1})
    with pytest.raises(ValueError, match="row 0: 'chosen' and 'rejected' must share the same user turns"):
        preference_texts({"prompt": "p", "chosen": "a", "rejected": conv["rejected"]})
    # a plain row through the template (RewardBench's formatting) equals the one-turn chat
    plain = {"prompt": "hi", "chosen": "A", "rejected": "B"}
    assert preference_texts(plain, input_format="conversation") == (src, a, b)


MIX = [
    {
        "id": "e1",
        "instruction": "Say ",
        "input": "hi",
        "output": "hi",
        "candidates": [
            {"text": "hi", "model": "m1", "scores": {"bleu": 90.0, "rouge": 0.1}},
            {"text": "hello", "model": "m2", "scores": {"bleu": 50.0, "rouge": 0.5}},
            {"text": "hi", "model": "m3", "scores": {"bleu": 10.0, "rouge": 0.0}},
            {"text": "bye", "model": "m4", "scores": {"bleu": 10.0, "rouge": 0.4}},
        ],
    }
]


def test_mixinstruct_pairs_by_score_sign_and_dedup():
    pairs = mixinstruct_to_pairs(MIX, metrics=["bleu"], pairs_per_example=10)
    # "hi" keeps its first score (90); hello 50, bye 10 -> all 3 pairs differ
    assert sorted((p["chosen"], p["rejected"]) for p in pairs) == [("hello", "bye"), ("hi", "bye"), ("hi", "hello")]
    assert all(p["prompt"] == "Say hi" for p in pairs)
    # weighted sum: bleu*0.01 + rouge -> hi 1.0, hello 1.0 (tie, skipped), bye 0.5
    weighted = mixinstruct_to_pairs(MIX, metrics=["bleu", "rouge"], pairs_per_example=10)
    assert sorted((p["chosen"], p["rejected"]) for p in weighted) == [("hello", "bye"), ("hi", "bye")]
    assert len(mixinstruct_to_pairs(MIX, metrics=["bleu"], pairs_per_example=2)) == 2
    with pytest.raises(ValueError, match="pairs_per_example"):
        mixinstruct_to_pairs(MIX, pairs_per_example=0)


def test_load_mixinstruct_local_jsonl_roundtrip(tmp_path):
    path = tmp_path / "mix.jsonl"
    path.write_text(json.dumps(MIX[0]) + "\n" + '{"id": "torn", "cand')  # crash-torn last line is ignored
    (ex,) = load_mixinstruct(path)
    assert isinstance(ex, MixInstructExample) and ex.source == "Say hi" and ex.candidates[1].scores["bleu"] == 50.0
    assert MixInstructExample.from_dict(ex.to_dict()) == ex
    with pytest.raises(ValueError, match="row 0 has no 'candidates'"):
        MixInstructExample.from_dict({"id": "x"})


def test_collator_uses_core_encoding_both_orders(tiny_hf_dir):
    from pairrm_hf import load_pairrm_tokenizer

    tok = load_pairrm_tokenizer(str(tiny_hf_dir))
    lengths = PairLengths(16, 8)
    rows = [
        {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five, I think, or maybe six."},
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Go"},
    ]
    batch = PairRMDataCollator(tok, lengths)(rows)
    enc = PairEncoder(tok, lengths)
    expected = [
        enc.encode_pair(r["prompt"], a, b)
        for r in rows
        for a, b in ((r["chosen"], r["rejected"]), (r["rejected"], r["chosen"]))
    ]
    assert batch["labels"].tolist() == [1.0, -1.0, 1.0, -1.0]
    for k, row in enumerate(expected):
        n = int(batch["attention_mask"][k].sum())
        assert batch["input_ids"][k, :n].tolist() == row
        assert batch["input_ids"][k, n:].eq(tok.pad_token_id).all()


# ------------------------------------------------------------------------------------------------ learning

GOOD, BAD = ["good", "yes", "best", "thanks"], ["bad", "no", "worst", "sorry"]
FILL = "the a is are to of and in that it for on with as at by this from or which one two three".split()


def _synthetic(n: int, seed: int) -> list[dict]:
    """The chosen answer holds a positive word, the rejected one a negative word, among random filler."""
    rng = random.Random(seed)

    def filler(k):
        return " ".join(rng.choice(FILL) for _ in range(k))

    return [
        {
            "prompt": filler(4) + "?",
            "chosen": f"{filler(rng.randint(0, 3))} {rng.choice(GOOD)} {filler(rng.randint(0, 3))}",
            "rejected": f"{filler(rng.randint(0, 3))} {rng.choice(BAD)} {filler(rng.randint(0, 3))}",
        }
        for _ in range(n)
    ]


def _accuracy(rm, rows):
    margins = rm.compare([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    return float(np.mean(margins > 0))


@pytest.mark.slow
def test_training_learns_a_preference_rule_and_round_trips(make_tiny_pairrm, tmp_path):
    start = make_tiny_pairrm("start", hidden=32, seed=0)
    held_out = _synthetic(100, seed=999)
    before = _accuracy(PairRM.from_pretrained(start, device="cpu"), held_out)
    assert 0.2 <= before <= 0.8  # a random head: near chance
    out = tmp_path / "trained"
    trainer = train_pairrm(
        str(start),
        _synthetic(1000, seed=0),
        output_dir=out,
        max_steps=80,
        learning_rate=5e-3,
        per_device_train_batch_size=8,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        seed=0,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1000,
    )
    assert trainer.state.global_step == 80
    rm = PairRM.from_pretrained(out, device="cpu")
    assert _accuracy(rm, held_out) >= 0.9
    # the ranking API on the saved model: the positive answer ranks first
    ranked = rm.rank("Which one?", ["the sorry a", "the good a", "it is no"])
    assert ranked[0].text == "the good a"
    assert (out / "spm.model").is_file() and (out / "tokenizer.json").is_file()


def test_save_pairrm_round_trip(tiny_backbone_dir, tmp_path):
    model, tok = init_pairrm_from_backbone(tiny_backbone_dir)
    model.eval()
    folder = save_pairrm(model, tok, tmp_path / "saved", PairLengths(64, 32))
    rm = PairRM.from_pretrained(folder, device="cpu")
    assert rm.lengths == PairLengths(64, 32)
    assert (tmp_path / "saved" / "spm.model").is_file()
    for key, value in model.state_dict().items():
        assert torch.equal(rm.model.state_dict()[key], value), key
    # the saved tokenizer keeps the checkpoint's NFKC normalizer: same ids as the original tokenizer
    text = "ﬁne Ⅻ café"
    assert rm.tokenizer(text)["input_ids"] == tok(text)["input_ids"]


# ------------------------------------------------------------------------------------------------ candidate generation


def _tiny_causal_lm(folder, tokenizer_dir, seed):
    import shutil

    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=128)).save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    shutil.copyfile(tokenizer_dir / "spm.model", folder / "spm.model")
    return str(folder)


def test_generate_candidates_batched_left_padding_and_resume(tiny_hf_dir, tmp_path):
    import shutil

    from pairrm_hf.generation.candidates import generate_candidates

    lm_a = _tiny_causal_lm(tmp_path / "lm_a", tiny_hf_dir, 0)
    lm_b = _tiny_causal_lm(tmp_path / "lm_b", tiny_hf_dir, 1)
    prompts = ["Hi", "What is the capital of France and why?", {"id": "x", "instruction": "Say ", "input": "yes"}]
    out = tmp_path / "cands.jsonl"
    batched = generate_candidates(prompts, [lm_a, lm_b], out, batch_size=3, max_new_tokens=4, device="cpu")
    single = generate_candidates(
        prompts, [lm_a, lm_b], tmp_path / "single.jsonl", batch_size=1, max_new_tokens=4, device="cpu"
    )
    assert [ex.id for ex in batched] == ["0", "1", "x"]
    assert [[c.model for c in ex.candidates] for ex in batched] == [[lm_a, lm_b]] * 3
    # left padding: a prompt's answer does not depend on its batch neighbours
    assert [[c.text for c in ex.candidates] for ex in batched] == [[c.text for c in ex.candidates] for ex in single]
    # resume: finished ids are skipped (the models are gone, so any new generation would fail)
    shutil.rmtree(lm_a)
    shutil.rmtree(lm_b)
    again = generate_candidates(prompts, [lm_a, lm_b], out, batch_size=3, device="cpu")
    assert [ex.to_dict() for ex in again] == [ex.to_dict() for ex in batched]
    assert len(out.read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="repeats id"):
        generate_candidates(["a", {"id": "0", "input": "b"}], [lm_a], tmp_path / "dup.jsonl")

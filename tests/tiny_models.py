"""Builders of tiny local models for tests and examples: no Hub access, seconds on a CPU."""

from __future__ import annotations

import random
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import DebertaV2Config, DebertaV2Tokenizer

from pairrm_hf import DebertaV2PairRM
from pairrm_hf.tokenization_pairrm import PREFIX_TOKENS

_WORDS = (
    "the a an is are was were be to of and in that it for on with as at by this from or which one two three four five "
    "six seven eight nine ten zero answer question paris france capital city sea poem write good bad better best "
    "worst yes no maybe sum plus equals number cat dog red blue green sky water sun moon hello thanks sorry please "
    "help me you we they what why how when where who model rank compare candidate source reward policy"
).split()


def _corpus(path: Path, lines: int = 3000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
            if rng.random() < 0.5:
                words.append(str(rng.randint(0, 99)))
            f.write(" ".join(words).capitalize() + rng.choice([".", "?", "!", ""]) + "\n")
    return path


def train_spm(folder: Path, vocab_size: int = 300, name: str = "spm.model", seed: int = 0) -> Path:
    """Train a small unigram SentencePiece model with DeBERTa-v3's special pieces; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(folder / "corpus.txt", seed=seed)
    prefix = folder / name.removesuffix(".model")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", byte_fallback=False, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        minloglevel=2, num_threads=1,
    )  # fmt: skip
    corpus.unlink()
    (folder / (prefix.name + ".vocab")).unlink()
    return prefix.with_suffix(".model")


def build_tiny_pairrm(
    folder: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0, head_scale: float = 1.0
) -> Path:
    """A random tiny PairRM saved in the HF-native layout (tokenizer with the four prefix tokens)."""
    folder = Path(folder)
    train_spm(folder, seed=seed)
    tokenizer = DebertaV2Tokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(list(PREFIX_TOKENS))
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in PREFIX_TOKENS]
    config = DebertaV2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, relative_attention=True, position_buckets=64, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
        type_vocab_size=0, pad_token_id=0, initializer_range=0.2, n_tasks=1, drop_out=0.05, source_prefix_id=ids[0],
        cand1_prefix_id=ids[1], cand2_prefix_id=ids[2], cand_prefix_id=ids[3],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DebertaV2PairRM(config)
    with torch.no_grad():
        for module in (model.head_layer[1], model.head_layer[4]):
            module.weight.mul_(head_scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""Tiny local models for tests, examples and benchmarks: no Hub access, seconds on a CPU.

Like ``transformers.testing_utils``, this module is part of the package so that examples and benchmarks can
build what they need without importing the test suite. Every builder saves a folder and returns its path.

* :func:`build_tiny_pairrm`: a random tiny PairRM (HF-native layout) on a SentencePiece model trained here.
* :func:`build_tiny_policy`: a random tiny GPT-2 with a character tokenizer and a chat template (TRL tests).
* :func:`build_tiny_t5` / :func:`build_tiny_llama`: a Flan-style fuser and a chat causal LM on a given tokenizer.
"""

from __future__ import annotations

import random
import shutil
import string
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from .modeling_pairrm import DebertaV2PairRM
from .tokenization_pairrm import PREFIX_TOKENS

__all__ = ["train_spm", "build_tiny_pairrm", "build_tiny_tokenizer", "build_tiny_policy", "build_tiny_t5",
           "build_tiny_llama", "POLICY_CHAT_TEMPLATE", "LLAMA_CHAT_TEMPLATE"]  # fmt: skip

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


_POLICY_SPECIAL = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
POLICY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Characters are tokens: any prompt's tokens are a prefix of prompt + completion, as DPO wants."""
    chars = [c for c in string.printable if c not in "\r\x0b\x0c"]
    vocab = {tok: k for k, tok in enumerate([*_POLICY_SPECIAL, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(_POLICY_SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|end|>", bos_token=None
    )
    fast.chat_template = POLICY_CHAT_TEMPLATE
    return fast


def build_tiny_policy(folder: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a random 2-layer GPT-2 (~40k parameters) and its tokenizer to ``folder``; returns the folder.

    Saved, not just built: TRL reloads reference models from ``config._name_or_path``.
    """
    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=hidden, n_layer=layers, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: A minimal chat template: one line per message, then the assistant's turn.
LLAMA_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tiny_t5(folder: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A random Flan-style tiny T5 on the T5 tokenizer in ``tokenizer_dir`` (with its ``spiece.model``)."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copyfile(Path(tokenizer_dir) / "spiece.model", folder / "spiece.model")
    return folder


def build_tiny_llama(folder: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """A random tiny Llama-style causal LM on the tokenizer in ``tokenizer_dir``, given :data:`LLAMA_CHAT_TEMPLATE`."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""Tiny local models for tests, examples and benchmarks: no Hub access, seconds on a CPU.

Like ``transformers.testing_utils``, this module is part of the package so that examples and benchmarks can
build what they need without importing the test suite. Every builder saves a folder and returns its path.

* :func:`build_tiny_pairrm`: a random tiny PairRM (HF-native layout) on a SentencePiece model trained here.
* :func:`build_tiny_policy`: a random tiny GPT-2 with a character tokenizer and a chat template (TRL tests).
* :func:`build_tiny_t5` / :func:`build_tiny_llama`: a Flan-style fuser and a chat causal LM on a given tokenizer.
* :func:`build_tiny_encoder` / :func:`build_tiny_ranker`: a random tiny BERT, RoBERTa, XLM-R, ModernBERT or
  DeBERTa-v2 encoder on a word-level tokenizer built here, and a ``PairRanker``/``SummaReranker``/``DualReranker``
  on one; :func:`synthetic_ranking_rows` / :func:`synthetic_preference_rows` give a learnable preference task.
"""

from __future__ import annotations

import random
import shutil
import string
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    DebertaV2Config,
    DebertaV2Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    ModernBertConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
    T5Config,
    T5ForConditionalGeneration,
    XLMRobertaConfig,
)

from .models.modeling_pairrm import DebertaV2PairRM
from .tokenization.tokenization_pairrm import PREFIX_TOKENS

__all__ = [
    "train_spm",
    "build_tiny_pairrm",
    "build_tiny_tokenizer",
    "build_tiny_policy",
    "build_tiny_t5",
    "build_tiny_llama",
    "POLICY_CHAT_TEMPLATE",
    "LLAMA_CHAT_TEMPLATE",
    "ENCODER_FAMILIES",
    "build_tiny_word_tokenizer",
    "tiny_encoder_config",
    "build_tiny_encoder",
    "build_tiny_ranker",
    "synthetic_ranking_rows",
    "synthetic_preference_rows",
]

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
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        byte_fallback=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
        num_threads=1,
    )
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
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        relative_attention=True,
        position_buckets=64,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
        type_vocab_size=0,
        pad_token_id=0,
        initializer_range=0.2,
        n_tasks=1,
        drop_out=0.05,
        source_prefix_id=ids[0],
        cand1_prefix_id=ids[1],
        cand2_prefix_id=ids[2],
        cand_prefix_id=ids[3],
    )
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
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
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
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
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
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ encoder rankers
#: Encoder families the tiny builders make; each maps to its special tokens (BERT-style or RoBERTa-style).
ENCODER_FAMILIES = ("bert", "roberta", "xlm-roberta", "modernbert", "deberta-v2")
_BERT_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
_ROBERTA_SPECIALS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "cls_token": "<s>",
    "sep_token": "</s>",
    "mask_token": "<mask>",
}


def _family(family: str) -> str:
    if family not in ENCODER_FAMILIES:
        raise ValueError(f"family must be one of {ENCODER_FAMILIES}, got {family!r}")
    return family


def build_tiny_word_tokenizer(family: str = "bert") -> PreTrainedTokenizerFast:
    """A lower-casing word-level fast tokenizer over the builders' word list and 0–99, with the family's special
    tokens (``[CLS]``/``[SEP]`` or ``<s>``/``</s>``) and the four ranker prefix tokens added."""
    specials = _ROBERTA_SPECIALS if _family(family) in ("roberta", "xlm-roberta") else _BERT_SPECIALS
    names = list(dict.fromkeys(specials.values()))
    words = sorted(set(_WORDS) | {str(k) for k in range(100)} | set(".,?!"))
    vocab = {tok: k for k, tok in enumerate([*names, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(names)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    fast.add_tokens(list(PREFIX_TOKENS))
    return fast


def tiny_encoder_config(
    family: str, tokenizer: PreTrainedTokenizerFast, *, hidden: int = 32, layers: int = 2, heads: int = 4
) -> PretrainedConfig:
    """A random tiny encoder config of ``family`` sized for ``tokenizer`` (rows up to 512 tokens)."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.05,
    )
    family = _family(family)
    if family == "bert":
        return BertConfig(**common, max_position_embeddings=512)
    if family in ("roberta", "xlm-roberta"):
        cls = RobertaConfig if family == "roberta" else XLMRobertaConfig
        return cls(
            **common,
            max_position_embeddings=514,
            type_vocab_size=1,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if family == "modernbert":
        return ModernBertConfig(
            **common,
            max_position_embeddings=512,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            global_attn_every_n_layers=1,
        )
    return DebertaV2Config(
        **common,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=64,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
    )


def build_tiny_encoder(folder: Path, family: str = "bert", *, seed: int = 0, **sizes) -> Path:
    """Save a random tiny ``AutoModel`` encoder of ``family`` and its word-level tokenizer (a stand-in for a Hub
    backbone such as ``roberta-base``); returns the folder."""
    folder = Path(folder)
    tokenizer = build_tiny_word_tokenizer(family)
    torch.manual_seed(seed)
    AutoModel.from_config(tiny_encoder_config(family, tokenizer, **sizes)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_ranker(
    folder: Path,
    ranker_type: str = "pairranker",
    family: str = "bert",
    *,
    n_tasks: int = 1,
    seed: int = 0,
    source_max_length: int = 64,
    candidate_max_length: int = 64,
    **sizes,
) -> Path:
    """Save a random tiny ranker (``pairranker``, ``summareranker`` or ``dual``) on a ``family`` encoder; returns
    the folder (loads with ``PairRM.from_pretrained``)."""
    from .training.rankers import ranker_class

    folder = Path(folder)
    tokenizer = build_tiny_word_tokenizer(family)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in PREFIX_TOKENS]
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(tiny_encoder_config(family, tokenizer, **sizes))
    model = ranker_class(ranker_type).from_encoder(
        encoder,
        prefix_ids=tuple(ids),
        n_tasks=n_tasks,
        source_max_length=source_max_length,
        candidate_max_length=candidate_max_length,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: Marked words of the synthetic task: an answer's quality is how many positive (vs negative) words it holds.
_SYNTH_POSITIVE, _SYNTH_NEGATIVE = ("good", "yes", "best", "thanks"), ("bad", "no", "worst", "sorry")
_SYNTH_FILLER = [w for w in _WORDS if w not in _SYNTH_POSITIVE + _SYNTH_NEGATIVE + ("better",)]


def synthetic_ranking_rows(n: int, *, n_candidates: int = 4, seed: int = 0) -> list[dict]:
    """MixInstruct-layout rows with a known preference rule: an answer holds two marked words amid 0–6 filler
    words, ``q`` positive ones (good, yes, best, thanks) and ``2 − q`` negative ones (bad, no, worst, sorry). Metrics:
    ``quality = q`` and ``quality_x2 = 2q − 2`` (two metrics that agree); the reference ``output`` has ``q = 2``.
    The first three candidates have q = 2, 1, 0 in random order, further ones a random q."""
    rng = random.Random(seed)

    def filler(k: int) -> list[str]:
        return [rng.choice(_SYNTH_FILLER) for _ in range(k)]

    def answer(q: int) -> str:
        words = filler(rng.randint(0, 6))
        for marked in [rng.choice(_SYNTH_POSITIVE) for _ in range(q)] + [
            rng.choice(_SYNTH_NEGATIVE) for _ in range(2 - q)
        ]:
            words.insert(rng.randint(0, len(words)), marked)
        return " ".join(words)

    rows = []
    for k in range(n):
        qualities = rng.sample(range(3), k=min(n_candidates, 3)) + [rng.randint(0, 2) for _ in range(n_candidates - 3)]
        cands = [
            {"text": answer(q), "scores": {"quality": float(q), "quality_x2": float(2 * q - 2)}} for q in qualities
        ]
        rows.append(
            {
                "id": f"synthetic-{seed}-{k}",
                "instruction": "",
                "input": " ".join(filler(4)) + "?",
                "output": answer(2),
                "candidates": cands,
            }
        )
    return rows


def synthetic_preference_rows(n: int, *, seed: int = 0) -> list[dict]:
    """TRL preference rows ``{"prompt", "chosen", "rejected"}`` from :func:`synthetic_ranking_rows`'s rule: the
    chosen answer has more positive (and fewer negative) words."""
    out = []
    for row in synthetic_ranking_rows(n, n_candidates=2, seed=seed):
        a, b = row["candidates"]
        better, worse = (a, b) if a["scores"]["quality"] > b["scores"]["quality"] else (b, a)
        out.append({"prompt": row["input"], "chosen": better["text"], "rejected": worse["text"]})
    return out

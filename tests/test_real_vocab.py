"""Pair rows on the real DeBERTa-v3 vocabulary (128k pieces) equal upstream's HF-native ``tokenize_pair`` rows.

Upstream encoded ``"<|source|>" + text`` (and ``"<|candidateK|>" + text``) as one string with a tokenizer that has
the prefixes as added tokens, so the normalizer never saw the start of the user text. The reference below restates
that rule with the stock tokenizer (prefix tokens added as upstream did, SentencePiece normalizer restored).
"""

from __future__ import annotations

import shutil

import pytest
from transformers import DebertaV2Tokenizer

from pairrm_hf import PairEncoder, PairLengths
from pairrm_hf.tokenization.tokenization_pairrm import PREFIX_TOKENS, TEXT_MARKER, restore_sentencepiece_normalizer
from tests.conftest import ORACLE

REAL_SPM = ORACLE / "real_vocab" / "spm.model"
LENGTHS = PairLengths()  # PairRM's 1224/412

TEXTS = [
    "\u0085hello",  # stripped when encoded alone; upstream keeps "▁ [UNK]" there
    "\u0085",
    "\u2028line separator first",
    "\u00a0no-break space first",
    "   three spaces first",
    "\ttab first",
    "[SEP]\u0085after a special token",
    "x\u0085y",
    "\u0301combining acute first",
    "Wait… ｆｕｌｌ－ｗｉｄｔｈ Brand™ x²",
    "東京は日本の首都です。 😀👍🏽",
    f"{TEXT_MARKER}the stand-in marker itself",
    f"\u0085{TEXT_MARKER} again {TEXT_MARKER}",
    "",
    "  ",
]


@pytest.fixture(scope="module")
def upstream_tokenizer(tmp_path_factory):
    """The published PairRM tokenizer as upstream built it: DeBERTa-v3's spm.model + the four added prefixes."""
    folder = tmp_path_factory.mktemp("real_vocab")
    shutil.copyfile(REAL_SPM, folder / "spm.model")
    tok = DebertaV2Tokenizer.from_pretrained(str(folder))
    tok.add_tokens(list(PREFIX_TOKENS))
    assert restore_sentencepiece_normalizer(tok, str(folder))
    assert [tok.convert_tokens_to_ids(t) for t in PREFIX_TOKENS] == [128001, 128002, 128003, 128004]
    return tok


@pytest.fixture(scope="module")
def encoder(upstream_tokenizer):
    return PairEncoder(upstream_tokenizer, LENGTHS)


def upstream_row(tok, source: str, cand1: str, cand2: str, lengths: PairLengths = LENGTHS) -> list[int]:
    """Upstream's ``tokenize_pair`` for one example, without padding (upstream-facts §2.2)."""
    src = tok("<|source|>" + source, truncation=True, max_length=lengths.source_max_length)["input_ids"]
    budget = (lengths.total - len(src)) // 2
    c1 = tok("<|candidate1|>" + cand1, truncation=True, max_length=budget)["input_ids"]
    c2 = tok("<|candidate2|>" + cand2, truncation=True, max_length=budget)["input_ids"]
    return src + c1 + c2


@pytest.mark.parametrize("text", TEXTS)
def test_rows_equal_upstream_on_the_real_vocabulary(upstream_tokenizer, encoder, text):
    other = "Paris is the capital of France."
    assert encoder.encode_pair(text, other, text) == upstream_row(upstream_tokenizer, text, other, text)
    assert encoder.encode_pair(other, text, other) == upstream_row(upstream_tokenizer, other, text, other)


def test_leading_u0085_keeps_upstream_tokens(upstream_tokenizer, encoder):
    """The case that differed: the text alone would lose its U+0085 to the normalizer's strip."""
    (ids,) = encoder.tokenize(["\u0085hello"])
    assert upstream_tokenizer.convert_ids_to_tokens(ids) == ["▁", "[UNK]", "hello"]
    alone = upstream_tokenizer("\u0085hello", add_special_tokens=False)["input_ids"]
    assert upstream_tokenizer.convert_ids_to_tokens(alone) == ["▁hello"]


def test_truncation_on_real_token_counts(upstream_tokenizer, encoder):
    long_source = "\u0085" + "The quick brown fox jumps over the lazy dog. " * 200
    long_answer = "\u00a0" + "An answer that goes on and on. " * 150
    row = encoder.encode_pair(long_source, long_answer, "short")
    assert row == upstream_row(upstream_tokenizer, long_source, long_answer, "short")
    assert len(row) <= LENGTHS.total


def test_u0338_does_not_destroy_the_prefix(upstream_tokenizer, encoder):
    """Upstream's normalizer merged the prefix's ``>`` with a leading U+0338 into ``≯``: a bug not reproduced."""
    text = "\u0338x"
    broken = upstream_tokenizer("<|source|>" + text)["input_ids"]
    assert 128001 not in broken  # upstream lost its source prefix token
    row = encoder.encode_pair(text, "a", "b")
    assert row[:2] == [upstream_tokenizer.cls_token_id, 128001]
    # the text is encoded as text: U+0338 stays its own character, as when encoded alone
    assert (
        row[2 : row.index(upstream_tokenizer.sep_token_id)]
        == upstream_tokenizer(text, add_special_tokens=False)["input_ids"]
    )


def test_prefix_strings_in_text_stay_text_on_the_real_vocabulary(encoder):
    text = "\u0085<|source|> and <|candidate1|><|candidate2|>"
    row = encoder.encode_pair(text, text, text)
    assert [row.count(i) for i in (128001, 128002, 128003)] == [1, 1, 1]

"""Pair encoding: SentencePiece-exact ids on non-ASCII text, budgets, truncation and prefix strings as text."""

from __future__ import annotations

import pytest
import sentencepiece as spm
from transformers import DebertaV2Tokenizer

from pairrm_hf import PairEncoder, PairLengths, load_pairrm_tokenizer

UNICODE_CORPUS = [
    "Wait… what?",  # ellipsis (NFKC: "...")
    "price:\u00a0100\u00a0€",  # no-break spaces
    "ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３",  # full-width forms
    "Brand™ and x² and ½ cup",
    "東京は日本の首都です。北京是中国的首都。",
    "emoji 😀👍🏽 🇫🇷 👨‍👩‍👧",
    "café naïve Zürich résumé",  # composed and decomposed forms below
    "cafe\u0301 nai\u0308ve",
    "ligatures ﬁ ﬂ and Ⅻ roman",
    "tabs\tand\nnew lines\r\n  double  spaces",
    "Ünïcödé ÀÉÎÕÜ ßẞ",
    "ｶﾀｶﾅ half-width katakana",
    "math ∑∫√∞≤≥≠ and ℃ ㎏",
    "",
    "   ",
]


def spm_ids_as_published(sp: spm.SentencePieceProcessor, text: str, unk_id: int) -> list[int]:
    """SentencePiece ids, with each run of byte-fallback pieces read as one [UNK] (the published fast tokenizer
    has no byte fallback, so the original package saw [UNK] there)."""
    out: list[int] = []
    for piece_id in sp.encode(text):
        if sp.is_byte(piece_id) or sp.is_unknown(piece_id):
            if not out or out[-1] != unk_id:
                out.append(unk_id)
        else:
            out.append(piece_id)
    return out


def test_stock_v5_tokenizer_differs_and_ours_is_fixed(tiny_hf_dir):
    """The reason the fix exists: transformers 5 swaps NFKC for NFC on DeBERTa-v2."""
    sp = spm.SentencePieceProcessor(model_file=str(tiny_hf_dir / "spm.model"))
    stock = DebertaV2Tokenizer.from_pretrained(str(tiny_hf_dir))
    ours = PairEncoder(load_pairrm_tokenizer(str(tiny_hf_dir)))
    stock_ids = [stock(t, add_special_tokens=False)["input_ids"] for t in UNICODE_CORPUS]
    want = [spm_ids_as_published(sp, t, 3) for t in UNICODE_CORPUS]
    assert stock_ids != want
    assert ours.tokenize(UNICODE_CORPUS) == want


def test_ids_equal_sentencepiece_without_byte_fallback(make_tiny_pairrm):
    """A fresh checkpoint saved by transformers 5 itself (no byte fallback): ids equal SentencePiece's exactly."""
    folder = make_tiny_pairrm()
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    encoder = PairEncoder(load_pairrm_tokenizer(str(folder)))
    assert encoder.tokenize(UNICODE_CORPUS) == [sp.encode(t) for t in UNICODE_CORPUS]


def test_normalizer_rebuilt_from_spm_when_tokenizer_json_lacks_it(tiny_hf_dir, tmp_path):
    """A v4-style folder without tokenizer.json (spm.model + added tokens) still tokenizes like SentencePiece."""
    import shutil

    for name in ("spm.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json", "config.json"):
        shutil.copy(tiny_hf_dir / name, tmp_path / name)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model"))
    encoder = PairEncoder(load_pairrm_tokenizer(str(tmp_path)))
    assert encoder.tokenize(UNICODE_CORPUS) == [spm_ids_as_published(sp, t, 3) for t in UNICODE_CORPUS]


def test_prefix_strings_in_text_are_plain_text(tiny_rm):
    enc = tiny_rm.engine.encoder
    text = "see <|source|> and <|candidate1|><|candidate2|> and <|candidate|>"
    row = enc.encode_pair(text, text, text)
    prefix_ids = (enc.source_prefix_id, enc.cand1_prefix_id, enc.cand2_prefix_id)
    assert [row.count(t) for t in prefix_ids] == [1, 1, 1]
    assert tiny_rm.tokenizer.convert_tokens_to_ids("<|candidate|>") not in row
    # the model pools exactly one position per prefix: one logit per pair
    assert tiny_rm.compare([text], [text + "!"], [text]).shape == (1,)


def test_budgets_and_truncation(tiny_rm):
    enc = tiny_rm.engine.encoder
    word_id = enc.tokenize(["hello"])[0]
    long_text = " ".join(["hello"] * 3000)
    n = len(enc.tokenize([long_text])[0])
    assert n >= 3000 and len(word_id) == 1
    row = enc.encode_pair(long_text, long_text, long_text)
    assert len(row) == 1224 + 2 * 412  # source 1224, each candidate (2048 - 1224) // 2 = 412
    short_src = enc.encode_pair("hello", long_text, long_text)
    src_len = 5  # [CLS] <|source|> hello [SEP] -> 4 … plus one piece; computed below
    src_len = len(enc.source_segment(enc.tokenize(["hello"])[0]))
    budget = (2048 - src_len) // 2
    assert len(short_src) == src_len + 2 * budget
    # leftover budget goes to the candidates, as upstream (total never exceeds 2048)
    assert budget > 412 and len(short_src) <= 2048


def test_custom_lengths_pair_ranker(tiny_hf_dir):
    """llm-blender/pair-ranker's 128/128 (total 384)."""
    enc = PairEncoder(load_pairrm_tokenizer(str(tiny_hf_dir)), PairLengths(128, 128))
    long_text = " ".join(["hello"] * 600)
    assert len(enc.encode_pair(long_text, long_text, long_text)) == 384
    assert len(enc.source_segment(enc.tokenize([long_text])[0])) == 128


@pytest.mark.parametrize("bad", [2, 0, -5, "128", 12.5, True])
def test_lengths_validation(bad):
    with pytest.raises(ValueError, match="source_max_length"):
        PairLengths(source_max_length=bad)
    with pytest.raises(ValueError, match="candidate_max_length"):
        PairLengths(candidate_max_length=bad)


def test_tokenizer_folder_errors(tmp_path, tiny_backbone_dir):
    with pytest.raises(ValueError, match="no tokenizer"):
        load_pairrm_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match="prefix tokens"):
        load_pairrm_tokenizer(str(tiny_backbone_dir))

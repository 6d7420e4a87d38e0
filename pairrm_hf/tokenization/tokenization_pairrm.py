"""Exact PairRM pair encoding on transformers 5.

Two things differ from calling the stock tokenizer on ``"<|source|>" + text``:

* transformers 5 rebuilds the DeBERTa-v2 normalizer as NFC, while the published tokenizer (and SentencePiece)
  use NFKC through a precompiled charsmap. :func:`load_pairrm_tokenizer` restores the checkpoint's own
  normalizer, so ids equal those the original package produced, non-ASCII text included.
* User text is encoded with a tokenizer that does not know the PairRM prefix strings. A literal ``<|source|>``
  or ``<|candidate1|>`` inside a prompt or an answer is therefore ordinary text, never a second prefix token
  (upstream misaligned the pooling or crashed on it). Other special-token strings (``[SEP]``, ``[CLS]``, ...)
  keep the meaning the published tokenizer gives them, as in upstream's HF-native path.
* Upstream encoded ``"<|source|>" + text`` as one string, so the normalizer never saw the start of the user text
  (a leading U+0085 stays as ``▁ [UNK]`` instead of being stripped). Each text is therefore encoded behind a
  stand-in prefix token (:data:`TEXT_MARKER`) that is then dropped: the same ids as upstream, except that a text
  starting with U+0338 no longer merges with the prefix's ``>`` into ``≯`` (which destroyed upstream's prefix).

Any fast tokenizer works: ``[CLS]``/``[SEP]`` are the tokenizer's own (``cls_token``/``sep_token``, else
``bos_token``/``eos_token``: ``<s>``/``</s>`` for RoBERTa and XLM-R), and the prefix strings are added tokens
(:func:`add_prefix_tokens`). :class:`PointEncoder` and :class:`DualEncoder` build the rows of the pointwise and
dual-encoder rankers from the same segments.

Packing follows upstream's HF-native rule, per example: the source segment ``[CLS]<|source|>…[SEP]`` is cut to
``source_max_length`` tokens, and each candidate segment ``[CLS]<|candidateK|>…[SEP]`` to
``(source_max_length + 2 * candidate_max_length - len(source segment)) // 2`` tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tokenizers import AddedToken, Regex, Tokenizer, normalizers
from transformers import DebertaV2Tokenizer, PreTrainedTokenizerBase

from ..utils.checks import check_int

__all__ = [
    "PREFIX_TOKENS",
    "PairLengths",
    "PairEncoder",
    "PointEncoder",
    "DualEncoder",
    "encoder_for_style",
    "add_prefix_tokens",
    "load_pairrm_tokenizer",
    "load_ranker_tokenizer",
    "restore_sentencepiece_normalizer",
]

#: The four added tokens of every PairRM tokenizer, in id order.
PREFIX_TOKENS = ("<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>")
#: The stand-in prefix each user text is encoded behind (then dropped). It plays the part of ``<|source|>`` in
#: upstream's ``"<|source|>" + text``; it ends with ``|``, which no combining mark composes with under NFKC.
TEXT_MARKER = "<|text|"


@dataclass(frozen=True)
class PairLengths:
    """Token budgets of one packed row (defaults: PairRM's 1224/412, total 2048).

    ``llm-blender/pair-ranker`` used 128/128 (total 384).
    """

    source_max_length: int = 1224
    candidate_max_length: int = 412

    def __post_init__(self):
        for name in ("source_max_length", "candidate_max_length"):
            # [CLS], the prefix token and [SEP] must always fit
            check_int(name, getattr(self, name), minimum=3)

    @property
    def total(self) -> int:
        """Longest possible row: ``source_max_length + 2 * candidate_max_length``."""
        return self.source_max_length + 2 * self.candidate_max_length


def _spm_normalizer(spm_path: str) -> normalizers.Normalizer:
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    with open(spm_path, "rb") as f:
        proto.ParseFromString(f.read())
    return normalizers.Sequence(
        [
            normalizers.Strip(),
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )


def _has_precompiled(node: dict | None) -> bool:
    if not node:
        return False
    if node.get("type") == "Precompiled":
        return True
    return any(_has_precompiled(child) for child in node.get("normalizers", []) or [])


def restore_sentencepiece_normalizer(tokenizer: PreTrainedTokenizerBase, folder: str) -> bool:
    """Put the checkpoint's NFKC (SentencePiece charsmap) normalizer back on a v5 DeBERTa tokenizer.

    Uses the normalizer of ``folder/tokenizer.json`` when it has a precompiled charsmap, else rebuilds the one
    the v4 converter made from ``folder/spm.model``. Returns False when neither file offers one (the tokenizer
    is left as loaded).
    """
    json_path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as f:
            spec = json.load(f).get("normalizer")
        if _has_precompiled(spec):
            tokenizer.backend_tokenizer.normalizer = Tokenizer.from_file(json_path).normalizer
            return True
    spm_path = os.path.join(folder, "spm.model")
    if os.path.isfile(spm_path):
        tokenizer.backend_tokenizer.normalizer = _spm_normalizer(spm_path)
        return True
    return False


def load_pairrm_tokenizer(folder: str) -> PreTrainedTokenizerBase:
    """Load the DeBERTa-v2 tokenizer of a local PairRM folder with its SentencePiece normalizer restored.

    Raises ``ValueError`` when the folder has no tokenizer files or lacks one of :data:`PREFIX_TOKENS`.
    """
    if not any(os.path.isfile(os.path.join(folder, n)) for n in ("tokenizer.json", "spm.model")):
        raise ValueError(f"{folder!r} has no tokenizer: expected 'tokenizer.json' or 'spm.model' in the folder")
    tokenizer = DebertaV2Tokenizer.from_pretrained(folder)
    restore_sentencepiece_normalizer(tokenizer, folder)
    vocab = tokenizer.get_vocab()
    missing = [t for t in PREFIX_TOKENS[:3] if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer in {folder!r} lacks the PairRM prefix tokens {missing}")
    return tokenizer


def add_prefix_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add the missing :data:`PREFIX_TOKENS` to ``tokenizer`` (as plain added tokens); returns their four ids."""
    missing = [t for t in PREFIX_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in PREFIX_TOKENS]


def load_ranker_tokenizer(folder: str) -> PreTrainedTokenizerBase:
    """The fast tokenizer of a local ranker folder (any backbone); a DeBERTa-v2 one gets its NFKC normalizer back.

    Raises ``ValueError`` when it lacks one of :data:`PREFIX_TOKENS`.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {folder!r} must be a fast (tokenizers-backed) tokenizer")
    restore_sentencepiece_normalizer(tokenizer, folder)
    missing = [t for t in PREFIX_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer in {folder!r} lacks the ranker prefix tokens {missing}")
    return tokenizer


def _text_only_backend(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's backend without the PairRM prefix tokens (serialized), for encoding user text."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["content"] not in PREFIX_TOKENS]
    spec["truncation"] = None
    spec["padding"] = None
    return json.dumps(spec)


def _marked_backend(spec: str, marker: str) -> tuple[Tokenizer, int]:
    """The text backend with ``marker`` added as a normalized, non-special token (as upstream added its prefixes)."""
    backend = Tokenizer.from_str(spec)
    backend.add_tokens([AddedToken(marker, normalized=True, special=False)])
    return backend, backend.token_to_id(marker)


class PairEncoder:
    """Turns texts into PairRM rows: tokenizes each text once, then packs (source, candidate1, candidate2).

    Args:
        tokenizer: a PairRM tokenizer (see :func:`load_pairrm_tokenizer`).
        lengths: the token budgets of a row.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, lengths: PairLengths | None = None):
        self.tokenizer = tokenizer
        self.lengths = lengths or PairLengths()
        vocab = tokenizer.get_vocab()
        self.source_prefix_id, self.cand1_prefix_id, self.cand2_prefix_id = (vocab[t] for t in PREFIX_TOKENS[:3])
        self.cand_prefix_id = vocab.get(PREFIX_TOKENS[3])
        # BERT-style tokenizers have [CLS]/[SEP]; GPT/RoBERTa-style ones only name <s>/</s> as bos/eos.
        self.cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if self.cls_id is None or self.sep_id is None:
            raise ValueError("the tokenizer needs a cls_token (or bos_token) and a sep_token (or eos_token)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._text_spec = _text_only_backend(tokenizer)
        self._text_backend, self._marker_id = _marked_backend(self._text_spec, TEXT_MARKER)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text as upstream encoded it after its prefix token (no special tokens, no truncation).

        Prefix strings inside the text count as plain text.
        """
        if not texts:
            return []
        texts = list(texts)
        encodings = self._text_backend.encode_batch([TEXT_MARKER + t for t in texts], add_special_tokens=False)
        out = []
        for text, enc in zip(texts, encodings):
            ids = enc.ids
            if ids[0] != self._marker_id or self._marker_id in ids[1:]:
                ids = self._tokenize_with_fresh_marker(text)
            out.append(ids[1:])
        return out

    def _tokenize_with_fresh_marker(self, text: str) -> list[int]:
        # The text itself holds the marker string: encode it behind a marker it does not hold (rare, so unpooled).
        for k in range(1, 1000):
            marker = f"<|text{k}|"
            backend, marker_id = _marked_backend(self._text_spec, marker)
            ids = backend.encode(marker + text, add_special_tokens=False).ids
            if ids[0] == marker_id and marker_id not in ids[1:]:
                return ids
        raise ValueError(f"cannot encode a text that contains every stand-in prefix marker: {text[:80]!r}")

    def source_segment(self, text_ids: list[int]) -> list[int]:
        """``[CLS]<|source|>…[SEP]`` cut to ``source_max_length`` tokens."""
        keep = self.lengths.source_max_length - 3
        return [self.cls_id, self.source_prefix_id, *text_ids[:keep], self.sep_id]

    def candidate_budget(self, source_segment_length: int) -> int:
        """Tokens allowed for one candidate segment next to a source segment of the given length."""
        return (self.lengths.total - source_segment_length) // 2

    def candidate_body(self, text_ids: list[int], budget: int) -> list[int]:
        """The candidate's text ids that fit in a segment of ``budget`` tokens."""
        return list(text_ids[: budget - 3])

    def pack(self, source_segment: list[int], body1: list[int], body2: list[int]) -> list[int]:
        """One row: the source segment then both candidate segments."""
        return [
            *source_segment,
            self.cls_id,
            self.cand1_prefix_id,
            *body1,
            self.sep_id,
            self.cls_id,
            self.cand2_prefix_id,
            *body2,
            self.sep_id,
        ]

    def encode_pair(self, source: str, candidate1: str, candidate2: str) -> list[int]:
        """The row upstream's HF-native ``tokenize_pair`` builds for one example (without padding)."""
        src_ids, c1_ids, c2_ids = self.tokenize([source, candidate1, candidate2])
        segment = self.source_segment(src_ids)
        budget = self.candidate_budget(len(segment))
        return self.pack(segment, self.candidate_body(c1_ids, budget), self.candidate_body(c2_ids, budget))


class PointEncoder(PairEncoder):
    """Rows of a pointwise ranker (``SummaReranker``): ``[CLS]<|source|>…[SEP][CLS]<|candidate|>…[SEP]``.

    The source segment is cut as for pairs; the candidate gets what is left of
    ``source_max_length + candidate_max_length`` (so short sources leave room for long answers).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, lengths: PairLengths | None = None):
        super().__init__(tokenizer, lengths)
        if self.cand_prefix_id is None:
            raise ValueError(f"the tokenizer lacks the {PREFIX_TOKENS[3]!r} prefix token; see add_prefix_tokens")

    def candidate_budget(self, source_segment_length: int) -> int:
        """Tokens allowed for the candidate segment next to a source segment of the given length."""
        return self.lengths.source_max_length + self.lengths.candidate_max_length - source_segment_length

    def pack_point(self, source_segment: list[int], body: list[int]) -> list[int]:
        """One row: the source segment then the candidate segment."""
        return [*source_segment, self.cls_id, self.cand_prefix_id, *body, self.sep_id]


class DualEncoder(PointEncoder):
    """Rows of a dual encoder (``DualReranker``): the source segment alone, and ``[CLS]<|candidate|>…[SEP]`` alone,
    each cut to its own budget (``source_max_length`` / ``candidate_max_length``)."""

    def candidate_budget(self, source_segment_length: int) -> int:
        """A candidate row is encoded on its own: always ``candidate_max_length`` tokens."""
        return self.lengths.candidate_max_length

    def candidate_row(self, body: list[int]) -> list[int]:
        """A candidate's row: ``[CLS]<|candidate|>…[SEP]``."""
        return [self.cls_id, self.cand_prefix_id, *body, self.sep_id]


def encoder_for_style(
    style: str, tokenizer: PreTrainedTokenizerBase, lengths: PairLengths | None = None
) -> PairEncoder:
    """The row builder of a model's ``ranking_style`` (``pairwise``, ``pointwise`` or ``dual``)."""
    classes = {"pairwise": PairEncoder, "pointwise": PointEncoder, "dual": DualEncoder}
    if style not in classes:
        raise ValueError(f"ranking_style must be one of {sorted(classes)}, got {style!r}")
    return classes[style](tokenizer, lengths)

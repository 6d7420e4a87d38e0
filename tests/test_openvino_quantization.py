"""Static (calibrated) int8 on the OpenVINO backend: ``quantize="int8", calibration=...``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from pairrm_hf import PairRM
from pairrm_hf.ranking.openvino_backend import openvino_available
from pairrm_hf.ranking.openvino_quantization import (
    Calibration,
    StaticInt8,
    as_calibration,
    calibration_pairs,
    read_calibration,
)

needs_nncf = pytest.mark.skipif(
    not openvino_available("int8"), reason="openvino and nncf are not installed (pip install 'pairrm-hf[openvino]')"
)

PROMPTS = ["What is the capital of France?", "Write a poem about the sea. " * 30]
CANDS = [
    ["Paris.", "Berlin is the capital", "the capital city of france is paris", "Paris."],
    ["The sea is blue " * 20, "water water sea", "hello", "I like the sun and the moon " * 15],
]
#: calibration text of the same kind as the evaluated inputs, none of it the same
ROWS = [
    {"prompt": f"Question {k}: which city or sea is meant here?", "candidates": [a * (1 + k % 4) for a in answers]}
    for k, answers in enumerate(
        [
            ["Rome. ", "the capital is Madrid ", "Lisbon it is "],
            ["The ocean is deep ", "waves and salt ", "no idea "],
            ["Vienna, clearly. ", "I think it is Oslo ", "a city by the sea "],
            ["The sky and the sea ", "grey water ", "sunlight on the waves "],
        ]
        * 3
    )
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino_static_cache")


@pytest.fixture(scope="module")
def static_rm(tiny_hf_dir, cache):
    if not openvino_available("int8"):
        pytest.skip("openvino and nncf are not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PAIRRM_OPENVINO_CACHE", str(cache))
        return PairRM.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8", calibration=ROWS)


@needs_nncf
def test_static_int8_quantizes_activations_and_tracks_fp32(static_rm, tiny_rm):
    import openvino

    backbone = static_rm.engine.openvino_backbone
    assert backbone.precision == "int8-static"
    ops = [
        op.get_type_name() for op in openvino.Core().read_model(str(backbone.cache_entry / "backbone.xml")).get_ops()
    ]
    # activations carry quantize/dequantize pairs (weight-only compression has none)
    assert ops.count("FakeQuantize") >= 6  # at least the Q/K/V/output/FFN inputs of the tiny model's layers
    ref = np.stack(tiny_rm.comparison_matrices(PROMPTS, CANDS))
    got = np.stack(static_rm.comparison_matrices(PROMPTS, CANDS))
    diff = np.abs(got - ref)
    # the tiny random model (initializer 0.2, logits within ±0.2) is a hard case for int8: the weight-only int8 test
    # of test_openvino_backend holds it to the same 0.15; real checkpoints move by ~1e-2 (docs/guides/backends.md)
    tolerance = 0.15
    assert 0 < diff.max() < tolerance
    # a decision with a margin beyond that error does not flip (and such decisions exist in these inputs)
    clear = np.abs(ref) > tolerance
    assert clear.sum() >= 4
    assert (np.sign(got[clear]) == np.sign(ref[clear])).all()
    report = static_rm.check_precision(PROMPTS, CANDS)  # the reference is the torch fp32 model
    assert report.max_abs_logit_diff == pytest.approx(float(diff.max()), abs=1e-5)


@pytest.mark.slow
@needs_nncf
def test_the_cache_entry_follows_the_calibration(static_rm, tiny_hf_dir, cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(cache))
    entry = static_rm.engine.openvino_backbone.cache_entry
    stamp = (entry / "backbone.bin").stat().st_mtime_ns
    # the same rows from a JSONL file: the same token ids, so the same entry, read back without calibrating again
    path = tmp_path / "calibration.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    with caplog.at_level(logging.WARNING, logger="pairrm_hf.ranking"):
        again = PairRM.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8", calibration=str(path))
    assert again.engine.openvino_backbone.cache_entry == entry
    assert (entry / "backbone.bin").stat().st_mtime_ns == stamp
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    np.testing.assert_array_equal(
        again.comparison_matrices(PROMPTS[:1], CANDS[:1])[0], static_rm.comparison_matrices(PROMPTS[:1], CANDS[:1])[0]
    )
    # other rows get an entry of their own
    other = PairRM.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8", calibration=ROWS[:5])
    assert other.engine.openvino_backbone.cache_entry != entry
    assert other.engine.openvino_backbone.precision == "int8-static"


@needs_nncf
def test_cache_tag_changes_with_rows_and_options_only():
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    mask = np.ones_like(ids)
    one = StaticInt8([(ids, mask)], {"preset": "mixed"})
    assert one.cache_tag == StaticInt8([(ids.copy(), mask.copy())], {"preset": "mixed"}).cache_tag
    changed = ids.copy()
    changed[1, 5] = 0
    assert StaticInt8([(changed, mask)], {"preset": "mixed"}).cache_tag != one.cache_tag
    assert StaticInt8([(ids, mask)], {"preset": "performance"}).cache_tag != one.cache_tag
    # the same tokens cut into other batches are other calibration batches
    assert StaticInt8([(ids[:1], mask[:1]), (ids[1:], mask[1:])], {"preset": "mixed"}).cache_tag != one.cache_tag


def test_calibration_batches_are_the_engines_own_rows(tiny_rm):
    """Pairs spread over the rows, packed by the model's pair encoder, in length-bucketed batches of 16 rows."""
    calibration = as_calibration(ROWS, 20)
    static = tiny_rm.engine.static_int8(calibration)
    assert static.rows == 20 and [ids.shape[0] for ids, _ in static.batches] == [16, 4]
    # the engine's own batch size does not change them (nor, then, the cache key)
    other = tiny_rm.engine.with_options(batch_size=3).static_int8(calibration)
    assert other.cache_tag == static.cache_tag
    text = calibration.text
    examples = tiny_rm.engine.encode(list(text.sources), [list(c) for c in text.candidates])
    want = sorted(
        tuple(tiny_rm.engine.encoder.pack(examples[r].source, examples[r].candidates[i], examples[r].candidates[j]))
        for r, i, j in calibration_pairs([3] * len(ROWS), 20)
    )
    got = sorted(tuple(row[m == 1]) for ids, mask in static.batches for row, m in zip(ids, mask))
    assert got == want
    widths = [ids.shape[1] for ids, _ in static.batches]
    assert widths == sorted(widths, reverse=True)  # longest first, each batch padded to its own longest row


def test_calibration_leaves_out_rows_too_long_for_openvino(tiny_rm, monkeypatch):
    """Rows over OpenVINO's exact-Gather limit run on torch (``OpenVINOBackbone.longest_row``), so calibrating on
    them would calibrate nothing OpenVINO runs: with the limit lowered to the shorter batch's width, the longer batch
    is left out."""
    from pairrm_hf.ranking import openvino_backend

    calibration = as_calibration(ROWS, 20)
    whole = tiny_rm.engine.static_int8(calibration)
    long_width, short_width = (ids.shape[1] for ids, _ in whole.batches)
    assert long_width > short_width
    heads = openvino_backend.gather_heads(tiny_rm.model.pretrained_model.config.num_attention_heads)
    monkeypatch.setattr(openvino_backend, "GATHER_SAFE_ELEMENTS", heads * short_width**2)
    kept = tiny_rm.engine.static_int8(calibration)
    # the 4 shorter rows stay (one per request now: the lowered bound cuts requests too); the 16 longer ones go
    assert [ids.shape for ids, _ in kept.batches] == [(1, short_width)] * 4 and kept.rows == 4


def test_calibration_pairs_spread_over_every_row():
    assert calibration_pairs([2, 3], 100).tolist() == [[0, 0, 1], [0, 1, 0]] + [
        [1, i, j] for i in range(3) for j in range(3) if i != j
    ]
    picked = calibration_pairs([4] * 50, 100)  # 600 ordered pairs, 100 kept
    assert len(picked) == 100 and len({tuple(p) for p in picked.tolist()}) == 100
    assert (picked[:, 1] != picked[:, 2]).all()
    assert picked[0].tolist() == [0, 0, 1] and picked[-1].tolist() == [49, 3, 2]
    assert len(set(picked[:, 0].tolist())) == 50  # every row is sampled


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "torch", "quantize": "int8"}, "backend='torch' runs torch's dynamic int8"),
        ({"backend": "openvino"}, "needs quantize='int8'"),
        ({"backend": "openvino", "quantize": "int8", "calibration_size": 0}, "calibration_size must be"),
    ],
)
def test_bad_calibration_options_are_refused_before_loading(options, message):
    """Checked before the checkpoint is read: the folder does not even exist."""
    with pytest.raises(ValueError, match=message):
        PairRM.from_pretrained("/nonexistent/checkpoint", calibration=ROWS, **options)


def test_calibration_size_needs_calibration(tiny_hf_dir):
    with pytest.raises(ValueError, match="calibration_size= needs calibration="):
        PairRM.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8", calibration_size=64)


def test_auto_picking_torch_refuses_calibration(tiny_hf_dir):
    """``backend="auto"`` runs torch for eager attention: a calibration could not apply, so it is an error."""
    with pytest.raises(ValueError, match=r"backend='auto' picked torch \(attention='eager' was asked for\)"):
        # a model of its own: the engine sets the asked-for attention on the model before auto decides
        PairRM.from_pretrained(tiny_hf_dir, backend="auto", attention="eager", quantize="int8", calibration=ROWS)


@pytest.mark.parametrize(
    ("lines", "error", "message"),
    [
        (['{"prompt": "p", "candidates": ["a", "b"]}', "{oops"], ValueError, r"row 1 \(line 2\): malformed JSON"),
        (['{"prompt": "p", "answers": ["a", "b"]}'], ValueError, r"row 0 \(line 1\): missing field 'candidates'"),
        (
            ['{"prompt": "p", "candidates": ["a"]}'],
            ValueError,
            r"row 0 \(line 1\): field 'candidates': expected a list",
        ),
        (['{"prompt": 3, "candidates": ["a", "b"]}'], TypeError, r"row 0 \(line 1\): field 'prompt' must be a str"),
        (["", '{"prompt": "p", "candidates": ["a", 7]}'], TypeError, r"row 0 \(line 2\): field 'candidates'\[1\]"),
        (['["p", "a", "b"]'], ValueError, r"row 0 \(line 1\): expected a JSON object"),
        ([""], ValueError, "holds no calibration rows"),
    ],
)
def test_bad_calibration_rows_name_file_row_and_field(tmp_path, lines, error, message):
    path = tmp_path / "calib.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(error, match=message) as raised:
        PairRM.from_pretrained("/nonexistent/checkpoint", backend="openvino", quantize="int8", calibration=path)
    assert str(path) in str(raised.value)


def test_calibration_rows_follow_the_input_rule():
    chat = [{"role": "user", "content": "Hi?"}]
    text = read_calibration(
        [
            {"prompt": "Q?", "instruction": "Be brief. ", "candidates": ["a", "b"]},
            {"prompt": chat, "candidates": ["x", "y"]},
        ]
    )
    assert text.sources[0] == "Be brief. Q?"  # instruction + prompt, no separator, as plain inputs everywhere
    assert "USER: Hi?" in text.sources[1] and text.candidates[1][0].endswith(": x")  # the conversation template
    with pytest.raises(TypeError, match=r"calibration\[0\]: field 'prompt'"):
        read_calibration([{"prompt": None, "candidates": ["a", "b"]}])
    with pytest.raises(TypeError, match="calibration must be a JSONL file path"):
        read_calibration(42)
    assert isinstance(as_calibration(ROWS), Calibration) and as_calibration(ROWS).size == 256


# --------------------------------------------------------------------------------------------------- pairrm serve
def test_serve_takes_quantize_and_calibration_and_checks_them_before_loading(tmp_path, capsys):
    from pairrm_hf.cli import main
    from pairrm_hf.cli.main import build_parser
    from pairrm_hf.cli.options import quantize_kwargs

    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    args = build_parser().parse_args(["serve", "--model", "m", "--quantize", "int8", "--calibration", str(path)])
    assert quantize_kwargs(args) == {"quantize": "int8", "calibration": str(path)}
    assert quantize_kwargs(build_parser().parse_args(["serve", "--model", "m"])) == {}  # nothing new by default
    # --calibration without --quantize: exit 2 with the reason, before the (missing) checkpoint is read
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "0", "--calibration", str(path)]) == 2
    assert "needs quantize='int8'" in capsys.readouterr().err


@needs_nncf
def test_the_server_runs_calibrated_int8(static_rm, tiny_hf_dir, cache, tmp_path, monkeypatch):
    from pairrm_hf.serve.service import PairRMService

    monkeypatch.setenv("PAIRRM_OPENVINO_CACHE", str(cache))
    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    service = PairRMService.from_pretrained(tiny_hf_dir, backend="openvino", quantize="int8", calibration=path)
    backbone = service.rm.engine.openvino_backbone
    assert backbone.precision == "int8-static"
    # the same rows as static_rm (whose engine batches by 16, the server's by 32): the same entry, read back
    assert backbone.cache_entry == static_rm.engine.openvino_backbone.cache_entry

"""Loading every published layout, conversion, and clear errors for broken folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pairrm_hf import Blender, DebertaV2PairRM, PairRM, convert_legacy_checkpoint, detect_layout, load_pairrm


def test_layouts_are_detected(tiny_hf_dir, tiny_legacy_dir):
    assert detect_layout(str(tiny_hf_dir)) == "hf"
    assert detect_layout(str(tiny_legacy_dir)) == "legacy"


def test_legacy_and_hf_layouts_load_the_same_model(tiny_hf_dir, tiny_legacy_dir, tiny_backbone_dir):
    hf = load_pairrm(tiny_hf_dir)
    legacy = load_pairrm(tiny_legacy_dir, backbone_config=tiny_backbone_dir)
    assert legacy.layout == "legacy" and hf.layout == "hf"
    assert (legacy.lengths.source_max_length, legacy.lengths.candidate_max_length) == (1224, 412)
    a, b = hf.model.state_dict(), legacy.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert hf.model.config.num_attention_heads == legacy.model.config.num_attention_heads == 4


def test_legacy_needs_head_count_when_model_name_does_not_fit(tiny_legacy_dir):
    # model_name says deberta-v3-large (1024 hidden), the weights are 64 wide: refuse to guess the head count
    with pytest.raises(ValueError, match=r"(?s)DeBERTa-v3 table.*backbone_config"):
        load_pairrm(tiny_legacy_dir)


def _legacy_copy(tiny_legacy_dir, folder, model_name):
    shutil.copytree(tiny_legacy_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_name"] = model_name
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _assert_same_weights(loaded, tiny_hf_dir):
    want = load_pairrm(tiny_hf_dir).model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert loaded.model.config.num_attention_heads == 4


def test_legacy_backbone_config_read_from_model_name_folder(tiny_legacy_dir, tiny_backbone_dir, tiny_hf_dir, tmp_path):
    """As upstream, ``model_name`` names the backbone; a local folder there gives the head count."""
    folder = _legacy_copy(tiny_legacy_dir, tmp_path / "legacy", str(tiny_backbone_dir))
    _assert_same_weights(load_pairrm(folder), tiny_hf_dir)
    blender = Blender()
    blender.loadranker(str(folder), device="cpu")
    assert blender.ranker.model.config.num_attention_heads == 4


def _fake_hub_cache(cache, repo_id, config_path):
    """A Hugging Face cache holding only ``repo_id``'s config.json, in huggingface_hub's layout."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copyfile(config_path, repo / "snapshots" / commit / "config.json")


@pytest.mark.parametrize("model_name", ["microsoft/deberta-v3-large", "someone/tiny-deberta"])
def test_legacy_backbone_config_read_from_hub_cache(
    model_name, tiny_legacy_dir, tiny_backbone_dir, tiny_hf_dir, tmp_path, monkeypatch
):
    """Offline, a Hub id in ``model_name`` resolves from the local cache before the DeBERTa-v3 table."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    _fake_hub_cache(cache, model_name, tiny_backbone_dir / "config.json")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import time, so set the constant too
    folder = _legacy_copy(tiny_legacy_dir, tmp_path / "legacy", model_name)
    _assert_same_weights(load_pairrm(folder), tiny_hf_dir)


def test_legacy_model_name_that_fits_nothing_names_what_was_tried(tiny_legacy_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    folder = _legacy_copy(tiny_legacy_dir, tmp_path / "legacy", "someone/not-cached")
    with pytest.raises(ValueError, match=r"(?s)someone/not-cached.*the Hub.*backbone_config"):
        load_pairrm(folder)


def test_convert_legacy_round_trip(tiny_legacy_dir, tiny_backbone_dir, tmp_path, tiny_rm):
    out = convert_legacy_checkpoint(tiny_legacy_dir, tmp_path / "converted", backbone_config=tiny_backbone_dir)
    assert detect_layout(out) == "hf"
    rm = PairRM.from_pretrained(out, device="cpu")
    prompts, a, b = ["Wait… ｆｕｌｌ 東京"], ["Paris™"], ["x² = 4"]
    np.testing.assert_allclose(rm.compare(prompts, a, b), tiny_rm.compare(prompts, a, b), atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        convert_legacy_checkpoint(out, tmp_path / "again")


def test_pair_ranker_layout_bin_weights_and_misspelled_lengths(tiny_legacy_dir, tiny_backbone_dir, tmp_path):
    """llm-blender/pair-ranker: pytorch_model.bin (loaded weights_only) and "source_max_length" keys."""
    folder = tmp_path / "pair-ranker"
    shutil.copytree(tiny_legacy_dir, folder)
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    state["pretrained_model.embeddings.position_ids"] = torch.arange(512)[None]  # a stale buffer, as in old files
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["source_maxlength"], config["candidate_maxlength"]
    config.update(source_max_length=128, candidate_max_length=128)
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_pairrm(folder, backbone_config=tiny_backbone_dir)
    assert (loaded.lengths.source_max_length, loaded.lengths.candidate_max_length) == (128, 128)
    rm = PairRM.from_pretrained(folder, backbone_config=tiny_backbone_dir, device="cpu")
    long_text = "hello " * 500
    assert len(rm.engine.encoder.encode_pair(long_text, long_text, long_text)) == 384


def test_pickled_weights_are_loaded_without_code_execution(tiny_legacy_dir, tiny_backbone_dir, tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    folder = tmp_path / "evil"
    shutil.copytree(tiny_legacy_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"x": Boom()}, folder / "pytorch_model.bin")
    with pytest.raises(Exception) as err:
        load_pairrm(folder, backbone_config=tiny_backbone_dir)
    assert "executed" not in str(err.value) and not isinstance(err.value, SystemExit)


@pytest.mark.parametrize(
    "remove,message",
    [
        ("config.json", "no config.json"),
        ("model.safetensors", "no weights"),
        ("tokenizer.json+spm.model", "no tokenizer"),
    ],
)
def test_missing_files_are_named(tiny_hf_dir, tmp_path, remove, message):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_hf_dir, folder)
    for name in remove.split("+"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match=message):
        load_pairrm(folder)


def test_not_a_pairrm_folder(tiny_backbone_dir, tmp_path):
    with pytest.raises(ValueError, match="not PairRM"):
        load_pairrm(tiny_backbone_dir)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        load_pairrm(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        load_pairrm(tiny_backbone_dir / "config.json")


def test_unknown_hub_id_offline_is_a_clear_oserror():
    with pytest.raises(OSError, match="could not find 'no-such-org/no-such-model'"):
        load_pairrm("no-such-org/no-such-model")


def test_saved_model_round_trip(tiny_rm, tmp_path):
    tiny_rm.model.save_pretrained(tmp_path)
    tiny_rm.tokenizer.save_pretrained(tmp_path)
    rm = PairRM.from_pretrained(tmp_path, device="cpu")
    prompts, a, b = ["Wait… ｆｕｌｌ"], ["café"], ["Ⅻ ½"]
    np.testing.assert_allclose(rm.compare(prompts, a, b), tiny_rm.compare(prompts, a, b), atol=1e-5)
    assert isinstance(rm.model, DebertaV2PairRM)


@pytest.mark.hub
@pytest.mark.parametrize("repo", ["llm-blender/PairRM-hf", "mightbe/Better-PairRM", "llm-blender/PairRM"])
def test_published_checkpoints_load_from_the_hub(repo):
    rm = PairRM.from_pretrained(repo, device="cpu")
    logits = rm.compare(["hello!", "I love you!"], ["hi!", "I hate you!"], ["f**k off!", "I love you, too!"], mode="ab")
    if repo == "llm-blender/PairRM-hf":  # the model card's numbers (upstream-facts §1b)
        np.testing.assert_allclose(logits, [1.9003021717071533, -1.2547134160995483], atol=1e-3)
    assert logits[0] > 0 and logits[1] < 0

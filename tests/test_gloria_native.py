"""Issue #27 (item 4): GLoRIA's own scores, its word-attention map and its zero-shot score, against a per-word,
per-region loop written here from GLoRIA's published equations (Huang et al., ICCV 2021, eqs. 1-4, with its
released zero-shot code's max over words), and through a converted GLoRIA model end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_convert import (  # noqa: F401 (fixtures)
    PREFIXES,
    _reference_model,
    _save,
    bert_config,
    lightning_checkpoint,
    released_state_dict,
    tokenizer_dir,
    tokenizer_with_config,
)

from afloc.convert import ConversionError, convert_checkpoint
from afloc.localization import gloria
from afloc.localization.heatmaps import LocalizationConfig, scale_to_unit_range, upsample
from afloc.localization.zero_shot import ZeroShotConfig
from afloc.text.tokenizer import ReportTokenizer, normalize_prompt


def _loop_attention(words: np.ndarray, regions: np.ndarray, temp1: float = 4.0):
    """Eq. 1-2, one number at a time: s_rj = region r . word j; a_rj = softmax over the words j; then
    attn_jr = softmax over the regions r of temp1 * a_rj; context c_j = sum_r attn_jr v_r."""
    n, dim = words.shape
    flat = regions.reshape(dim, -1)
    count = flat.shape[1]
    a = np.zeros((count, n))
    for r in range(count):
        scores = [sum(flat[d, r] * words[j, d] for d in range(dim)) for j in range(n)]
        top = max(scores)
        total = sum(math.exp(s - top) for s in scores)
        for j in range(n):
            a[r, j] = math.exp(scores[j] - top) / total
    attn = np.zeros((n, count))
    context = np.zeros((n, dim))
    for j in range(n):
        total = sum(math.exp(temp1 * a[r, j]) for r in range(count))
        for r in range(count):
            attn[j, r] = math.exp(temp1 * a[r, j]) / total
            context[j] += attn[j, r] * flat[:, r]
    return context, attn.reshape(n, *regions.shape[1:])


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-8))


def _loop_local(words: np.ndarray, regions: np.ndarray) -> float:
    """Eq. 3-4 as GLoRIA's zero-shot code aggregates: log(max_j exp(5 cos(w_j, c_j)))."""
    context, _ = _loop_attention(words, regions)
    return math.log(max(math.exp(5.0 * _cos(words[j], context[j])) for j in range(len(words))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_map_and_local_similarity_follow_the_per_word_loop(seed):
    rng = np.random.default_rng(seed)
    words = rng.normal(size=(4, 6)) * (1 + seed)  # larger vectors: sharper softmaxes
    regions = rng.normal(size=(6, 3, 5))
    context, attention = gloria.word_attention(torch.tensor(words), torch.tensor(regions))
    loop_context, loop_attention = _loop_attention(words, regions)
    np.testing.assert_allclose(attention.numpy(), loop_attention, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context.numpy(), loop_context, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attention.sum(dim=(1, 2)).numpy(), 1.0, rtol=1e-5)  # each word: a distribution
    # the map is the per-region maximum over the words
    heat = gloria.attention_map(torch.tensor(words), torch.tensor(regions)).numpy()
    np.testing.assert_allclose(heat, loop_attention.max(axis=0), rtol=1e-5, atol=1e-7)
    local = float(gloria.local_similarity(torch.tensor(words), torch.tensor(regions)))
    assert local == pytest.approx(_loop_local(words, regions), rel=1e-5, abs=1e-6)


def test_a_zero_column_floors_the_local_similarity_at_zero():
    """GLoRIA's released zero-shot code compares padding columns too: a zero word has cosine 0 with its context."""
    rng = np.random.default_rng(5)
    regions = rng.normal(size=(6, 3, 3))
    context, _ = _loop_attention(np.ones((1, 6)), regions)
    opposite = -context  # a word pointing away from its own context: cosine about -1
    alone = float(gloria.local_similarity(torch.tensor(opposite), torch.tensor(regions)))
    padded = np.concatenate([opposite, np.zeros((2, 6))])
    with_padding = float(gloria.local_similarity(torch.tensor(padded), torch.tensor(regions)))
    assert alone < -1 and with_padding == pytest.approx(_loop_local(padded, regions), abs=1e-6)
    assert with_padding >= 0.0


@pytest.mark.parametrize(
    ("prompt", "words", "expected"),
    [
        ("pneumonia", 1, 9),  # GLoRIA counts the characters: 9
        ("left lower lobe [x] opacity", 5, 26),  # 27 characters, "[" not counted (GLoRIA drops tokens starting with it)
        ("x" * 200, 1, 96),  # capped at the 96 columns after [CLS] that exist at max_length 97
        ("a b c d e f g", 7, 13),
    ],
)
def test_zero_shot_columns_count_characters_as_gloria_does(prompt, words, expected):
    assert gloria.zero_shot_columns(prompt, words, 97) == expected


def test_the_zero_shot_score_averages_the_global_cosine_and_the_local_similarity():
    rng = np.random.default_rng(7)
    image, report = rng.normal(size=6), rng.normal(size=6)
    words, regions = rng.normal(size=(3, 6)), rng.normal(size=(6, 4, 4))
    score = gloria.zero_shot_score(*(torch.tensor(x) for x in (image, regions, report, words)))
    assert float(score) == pytest.approx((_cos(image, report) + _loop_local(words, regions)) / 2, abs=1e-5)


def test_settings_refuse_what_gloria_scoring_cannot_do():
    with pytest.raises(ValueError, match="shallow"):
        LocalizationConfig(similarity="gloria", shallow_weight=0.5)
    assert ZeroShotConfig(similarity="gloria").similarity == "gloria"
    with pytest.raises(ValueError, match="zero-shot similarity"):
        ZeroShotConfig(similarity="glorious")


@pytest.fixture(scope="module")
def native(tmp_path_factory, bert_config, tokenizer_with_config):  # noqa: F811
    """A GLoRIA-layout checkpoint converted twice: through the AFLoc path (default) and with GLoRIA's own scores."""
    root = tmp_path_factory.mktemp("native")
    model = _reference_model(bert_config, shallow_head=False, seed=4)
    hyper = {"model": {"text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT"}}}
    path = _save(lightning_checkpoint(released_state_dict(model, PREFIXES["gloria"]), hyper), root / "g.ckpt")
    convert_checkpoint(path, str(tokenizer_with_config), root / "afloc_path", "gloria")
    convert_checkpoint(path, str(tokenizer_with_config), root / "as_published", "gloria", similarity="gloria")
    return path, root / "afloc_path", root / "as_published"


def test_a_converted_gloria_model_localizes_and_scores_as_gloria(native, tokenizer_with_config, tmp_path):  # noqa: F811
    from afloc import AFLocPredictor

    _, afloc_path, as_published = native
    predictor = AFLocPredictor.from_pretrained(as_published)
    assert predictor.localization.similarity == "gloria" and predictor.zero_shot.similarity == "gloria"
    card = (as_published / "README.md").read_text()
    assert "GLoRIA's own word-attention map" in card and "(global cosine + local" in card
    assert "Through the AFLoc path" in (afloc_path / "README.md").read_text()

    rng = np.random.default_rng(0)
    encoded = predictor.encode_image(rng.random((90, 70)))
    prompt = "Patchy opacity in the left lower lobe. Small effusion"
    unsmoothed = predictor.with_localization(smoothing_sigma=0.0)
    heat = unsmoothed.localize(prompt, encoded, space="model")
    # independently: the text encoder's word vectors of [CLS] and the words (the columns GLoRIA's attention uses)
    text = normalize_prompt(prompt, "reference")
    with torch.inference_mode():
        out = predictor.model.encode_text(predictor.tokenizer([text]))
    count = int(out.word_mask[0].sum())
    assert count == len(text.split()) + 1  # [CLS] + each word (the tiny vocabulary may split words into pieces)
    words = out.word_embeddings[0, :count].double().numpy()
    _, attention = _loop_attention(words, encoded.patch_embeddings.double().numpy())
    expected = scale_to_unit_range(upsample(attention.max(axis=0)[None], predictor.preprocessing.input_size))[0]
    np.testing.assert_allclose(heat, expected, atol=2e-4)
    # through the AFLoc path the same image gives another map
    other = AFLocPredictor.from_pretrained(afloc_path).with_localization(smoothing_sigma=0.0)
    assert np.abs(other.localize(prompt, other.encode_image(rng.random((90, 70))), space="model") - heat).max() > 0.05

    # zero-shot: columns 1..characters of GLoRIA's layout, padded to max_length as GLoRIA's tokenizer call pads
    padded = ReportTokenizer(predictor.tokenizer.tokenizer, max_length=97, pad_to_max_length=True)
    with torch.inference_mode():
        full = predictor.model.encode_text(padded([text]))
    columns = full.word_embeddings[0, 1 : 1 + len(prompt)].double().numpy()
    assert columns.shape[0] == len(prompt) and not columns[-1].any()  # zero padding columns take part
    glob = _cos(encoded.image_embedding.double().numpy(), full.report_embedding[0].double().numpy())
    local = _loop_local(columns, encoded.patch_embeddings.double().numpy())
    assert predictor.gloria_scores(prompt, encoded)[0] == pytest.approx((glob + local) / 2, abs=1e-4)
    # a finding's logit: the best positive prompt minus the best negative prompt
    from afloc.text.prompts import classification_prompts

    positives, negatives = classification_prompts("pneumonia")
    logit = predictor.zero_shot_logits("pneumonia", encoded)["pneumonia"]
    best = [predictor.gloria_scores(p, encoded).max() for p in (positives, negatives)]
    assert logit == pytest.approx(best[0] - best[1], abs=1e-9)
    with pytest.raises(ValueError, match="one at a time"):
        predictor.zero_shot_logits_batch("pneumonia", encoded.image_embedding[None])


def test_gloria_scores_need_the_gloria_layout(native, tokenizer_with_config, tmp_path):  # noqa: F811
    path = native[0]
    with pytest.raises(ConversionError, match="gloria layout"):
        convert_checkpoint(path, str(tokenizer_with_config), tmp_path / "x", "authors", similarity="gloria")


def test_the_evaluation_scores_gloria_both_ways(native, tmp_path, capsys):
    from training.__main__ import main as training_main
    from training.phantoms.generate import CorpusSpec, generate_corpus

    phantom = tmp_path / "phantom"
    generate_corpus(phantom, CorpusSpec(n=6, size=128, seed=3), workers=1, dicom_samples=0)
    common = ["--dataset", "phantom", "--images", str(phantom), "--split", "train", "--limit", "4"]
    common += ["--workers", "0", "--quiet", "--n-resamples", "20"]

    def run(name: str, *extra: str) -> tuple[dict, list[str]]:
        out = tmp_path / name
        assert training_main(["evaluate", "--model", str(native[1]), *common, "--out", str(out), *extra]) == 0
        summary = json.loads((out / "summary.json").read_text())
        return summary, (out / "samples.csv").read_text().splitlines()

    afloc_summary, afloc_rows = run("afloc_path", "--classification")
    native_summary, native_rows = run(
        "as_published", "--similarity", "gloria", "--classification", "--zero-shot-similarity", "gloria"
    )
    assert (afloc_summary["meta"]["similarity"], native_summary["meta"]["similarity"]) == ("dot", "gloria")
    assert native_summary["meta"]["zero_shot_similarity"] == "gloria"
    assert afloc_rows != native_rows
    assert afloc_summary["classification"] != native_summary["classification"]
    capsys.readouterr()
    lone = ["evaluate", "--model", str(native[1]), *common, "--out", str(tmp_path / "z"), "--zero-shot-similarity"]
    assert training_main([*lone, "gloria"]) == 2
    assert "--classification" in capsys.readouterr().err

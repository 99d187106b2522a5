"""Model shapes, configuration and package boundaries."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch

from afloc import AFLoc, AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from afloc.hub.building import load_backbone_weights
from afloc.modeling.image_encoder import ImageEncoder


@pytest.mark.parametrize(
    ("backbone", "internal_size", "shallow", "deep"),
    [
        ("resnet10", None, 28, 14),
        ("resnet18", None, 28, 14),
        ("resnet18", 299, 38, 19),
        ("resnet50", None, 28, 14),
        ("resnet50", 299, 38, 19),
    ],
)
def test_image_encoder_levels(backbone, internal_size, shallow, deep):
    torch.manual_seed(0)
    encoder = ImageEncoder(ImageEncoderConfig(backbone=backbone, internal_size=internal_size), embedding_dim=48)
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, 224, 224))
    assert out.shallow_patch_embeddings.shape == (2, 48, shallow, shallow)
    assert out.patch_embeddings.shape == (2, 48, deep, deep)
    assert out.image_embedding.shape == (2, 48)
    # heads are linear maps without bias on the local levels (reference)
    assert encoder.shallow_projection.bias is None and encoder.deep_projection.bias is None
    assert encoder.global_projection.bias is not None


def test_resnet10_is_resnet18_with_one_block_per_stage(tiny_config):
    small = ImageEncoder(ImageEncoderConfig(backbone="resnet10"), embedding_dim=48).backbone
    full = ImageEncoder(ImageEncoderConfig(backbone="resnet18"), embedding_dim=48).backbone
    assert [len(getattr(small, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    # the same first block of every stage as ResNet-18 (same keys and shapes), the second blocks gone
    full_first = {k: v.shape for k, v in full.state_dict().items() if not re.match(r"layer\d\.1\.", k)}
    assert {k: v.shape for k, v in small.state_dict().items()} == full_first
    n_params = sum(p.numel() for p in small.parameters() if p.requires_grad)
    assert 4_900_000 < n_params < 5_000_000  # about 10 MB in float16
    # no ImageNet weights exist for it: a clear error, not a download attempt
    model = AFLoc(dataclasses.replace(tiny_config, image=ImageEncoderConfig(backbone="resnet10", image_size=64)))
    with pytest.raises(ValueError, match="no pretrained weights for 'resnet10'"):
        load_backbone_weights(model, "torchvision")


def test_image_encoder_rejects_wrong_shape():
    encoder = ImageEncoder(ImageEncoderConfig(backbone="resnet18"), embedding_dim=8)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encoder(torch.randn(2, 1, 64, 64))


def test_model_encodes_batch_of_one(tiny_model, tiny_tokenizer):
    text = tiny_tokenizer(["right lower lobe consolidation. no pleural effusion"])
    with torch.no_grad():
        image, report = tiny_model(torch.randn(1, 3, 64, 64), text)
    dim = tiny_model.embedding_dim
    assert image.image_embedding.shape == (1, dim)
    assert report.report_embedding.shape == (1, dim)
    assert report.sentence_embeddings.shape[:2] == (1, 3)  # [CLS] + 2 sentences
    assert report.sentence_mask.all()


def test_model_backward_reaches_both_encoders(tiny_config, tiny_tokenizer):
    from afloc import AFLocLoss

    torch.manual_seed(0)
    model = AFLoc(tiny_config)
    text = tiny_tokenizer(["the heart is normal. no effusion", "left lower lobe opacity", "no pneumothorax"])
    image, report = model(torch.randn(3, 3, 64, 64), text)
    terms = AFLocLoss(tiny_config.loss)(image, report)
    terms["total"].backward()
    assert model.image_encoder.shallow_projection.weight.grad.abs().sum() > 0
    assert model.image_encoder.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.text_encoder.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_config_roundtrip_and_validation(tiny_config):
    assert AFLocConfig.from_dict(tiny_config.to_dict()) == tiny_config
    with pytest.raises(ValueError, match="unknown image config keys"):
        AFLocConfig.from_dict({"image": {"backbone": "resnet18", "colour": True}})
    with pytest.raises(ValueError, match="backbone"):
        ImageEncoderConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="at least one loss weight"):
        LossConfig(report_weight=0, sentence_weight=0, word_weight=0)
    with pytest.raises(ValueError, match="word_level"):
        LossConfig(word_level="middle")
    with pytest.raises(ValueError, match="last_n_layers"):
        TextEncoderConfig(last_n_layers=8, bert_config={"hidden_size": 8, "num_hidden_layers": 2})
    with pytest.raises(ValueError, match="bert_config"):
        AFLoc(AFLocConfig(text=TextEncoderConfig()))


def test_backbone_weights_from_state_dict(tmp_path, tiny_config):
    torch.manual_seed(1)
    source = AFLoc(tiny_config).image_encoder.backbone.state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(source, path)
    model = AFLoc(dataclasses.replace(tiny_config))
    load_backbone_weights(model, str(path))
    for key, value in model.image_encoder.backbone.state_dict().items():
        if not key.startswith("fc"):
            assert torch.equal(value, source[key]), key
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="do not match"):
        load_backbone_weights(model, str(path))
    torch.save({k: v for k, v in source.items() if k != "conv1.weight"}, path)
    with pytest.raises(ValueError, match="missing keys"):
        load_backbone_weights(model, str(path))
    with pytest.raises(ValueError, match="does not exist"):
        load_backbone_weights(model, str(tmp_path / "absent.pt"))


def test_import_does_not_pull_training_or_ui_stacks():
    code = "import sys, afloc\nprint([m for m in ('lightning', 'pytorch_lightning', 'gradio') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_centred_words_subtract_the_centre_at_every_granularity(tiny_config, tiny_tokenizer):
    torch.manual_seed(0)
    plain = AFLoc(tiny_config).eval()
    centred_config = dataclasses.replace(tiny_config, text=dataclasses.replace(tiny_config.text, center_words=True))
    centred = AFLoc(centred_config).eval()
    centred.load_state_dict({**plain.state_dict(), "word_center": torch.zeros(32)})
    assert "word_center" in centred.state_dict() and "word_center" not in plain.state_dict()
    assert not any(k.startswith("text_encoder.") and "center" in k for k in centred.state_dict())

    texts = tiny_tokenizer(["left lower lobe opacity. small effusion.", "no pneumothorax."])
    with torch.no_grad():
        before = plain.encode_text(texts)
        center = centred.set_word_center([texts])
        after = centred.encode_text(texts)
    # the centre is the mean word vector ([CLS], words, [SEP]; no padding)
    num_words = texts.word_ids.max(dim=1).values + 1
    words = torch.cat([before.word_embeddings[i, : int(n)] for i, n in enumerate(num_words)])
    torch.testing.assert_close(center, words.mean(dim=0))
    # every word (and [SEP]) moves by -centre, padding stays zero
    for i, n in enumerate(num_words.tolist()):
        torch.testing.assert_close(after.word_embeddings[i, :n], before.word_embeddings[i, :n] - center)
        assert not after.word_embeddings[i, n:].any()
    # sentences are means of words, the report is the sum of words / max_length
    mask = before.sentence_mask
    torch.testing.assert_close(after.sentence_embeddings[mask], before.sentence_embeddings[mask] - center)
    expected_report = before.report_embedding - num_words.unsqueeze(1) * center / tiny_config.text.max_length
    torch.testing.assert_close(after.report_embedding, expected_report)


def test_word_centre_needs_the_option(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="center_words"):
        tiny_model.set_word_center([tiny_tokenizer(["x y"])])

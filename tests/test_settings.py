"""``afloc.settings.from_dict``: the one strict rule that turns JSON/YAML dicts into the library's configs."""

from __future__ import annotations

import pytest

from afloc import AFLocConfig, LocalizationConfig, Preprocessing
from afloc.settings import from_dict


def test_nested_sections_defaults_and_tuples():
    config = from_dict(AFLocConfig, {"image": {"backbone": "resnet10"}, "loss": {}}, "config")
    assert config.image.backbone == "resnet10" and config.text == AFLocConfig().text
    pre = Preprocessing.from_dict({"image_size": 96, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]})
    assert pre.mean == (0.1, 0.2, 0.3) and isinstance(pre.std, tuple)
    assert LocalizationConfig.from_dict({}) == LocalizationConfig()  # a missing key is the library's default


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (AFLocConfig, {"image": {"colour": 1}}, "unknown image config keys ['colour']"),
        (AFLocConfig, {"optimizer": {}}, "unknown config keys ['optimizer']"),
        (LocalizationConfig, {"smothing_sigma": 1.0}, "unknown localization keys ['smothing_sigma']"),
        (AFLocConfig, {"image": [1, 2]}, "image config must be a mapping of settings, got list"),
    ],
)
def test_unknown_keys_and_wrong_types_are_named(cls, data, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(cls, data, "localization" if cls is LocalizationConfig else "config")

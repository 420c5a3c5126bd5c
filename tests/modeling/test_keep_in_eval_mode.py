"""`OpenVocabSegmentor.keep_in_eval_mode`: frozen submodules stay in eval mode when the model trains."""

from __future__ import annotations

import pytest
from torch import nn

from ovseg_d2.modeling import OpenVocabSegmentor


class TwoTowers(OpenVocabSegmentor):
    """A frozen tower kept in eval mode next to a trained head, both with dropout."""

    def __init__(self) -> None:
        super().__init__(pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, train_class_names=["cat"])
        self.tower = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        self.head = nn.Dropout(0.5)
        self.keep_in_eval_mode("tower")


def test_kept_modules_stay_in_eval_mode_when_the_model_trains():
    model = TwoTowers().train()
    assert model.training and model.head.training
    assert not any(m.training for m in model.tower.modules())
    model.eval()
    assert not model.head.training and not model.tower.training
    model.train()
    assert model.head.training and not model.tower[1].training


def test_kept_modules_stay_in_eval_mode_inside_a_wrapper():
    """A wrapper (DDP, nn.Sequential) reaches the model through `Module.train` of its children."""
    wrapper = nn.Sequential(TwoTowers()).train()
    assert wrapper[0].head.training and not wrapper[0].tower.training


def test_unknown_submodule_is_an_error():
    model = TwoTowers()
    with pytest.raises(AttributeError, match="no submodule named \\['towr'\\]"):
        model.keep_in_eval_mode("towr")
    with pytest.raises(AttributeError, match="pixel_mean"):
        model.keep_in_eval_mode("pixel_mean")  # a buffer, not a module

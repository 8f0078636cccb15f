"""The training section's search space: dimensions, dotted settings, what may be searched."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.config import Dimension, TrainingConfig


def test_a_dimension_is_exactly_one_kind_with_ordered_bounds():
    assert Dimension(choice=[1, 2]).examples() == [1, 2]
    assert Dimension(randint=(1, 4)).examples() == [1, 3]
    with pytest.raises(ValidationError, match="exactly one of"):
        Dimension(choice=[1], uniform=(0.0, 1.0))
    with pytest.raises(ValidationError, match="exactly one of"):
        Dimension()
    with pytest.raises(ValidationError, match=r"low < high, got \[0.3, 0.1\]"):
        Dimension(uniform=(0.3, 0.1))
    with pytest.raises(ValidationError, match="low > 0"):
        Dimension(loguniform=(0.0, 1.0))


def test_settings_apply_by_dotted_name_and_are_validated():
    tuned = TrainingConfig().with_settings({"lr": 0.003, "model.hidden": 128,
                                            "model.loss_weights.rating": 0.0})
    assert (tuned.lr, tuned.model.hidden, tuned.model.loss_weights.rating) == (0.003, 128, 0.0)
    with pytest.raises(ValueError, match="'model.hiden': no field 'hiden'"):
        TrainingConfig().with_settings({"model.hiden": 64})
    with pytest.raises(ValueError, match="'lr.x': no section 'lr'"):
        TrainingConfig().with_settings({"lr.x": 1})
    with pytest.raises(ValidationError, match="dropout"):
        TrainingConfig().with_settings({"model.dropout": 1.5})


def test_the_space_is_checked_when_the_preset_loads():
    with pytest.raises(ValidationError, match="'model.hiden': no field"):
        TrainingConfig.model_validate({"tune": {"space": {"model.hiden": {"choice": [64]}}}})
    with pytest.raises(ValidationError, match="dropout"):  # an end of the range is invalid
        TrainingConfig.model_validate({"tune": {"space": {
            "model.dropout": {"uniform": [0.1, 1.5]}}}})
    with pytest.raises(ValidationError, match="'window_stride' cannot be searched"):
        TrainingConfig.model_validate({"tune": {"space": {"window_stride": {"choice": [0]}}}})
    assert set(TrainingConfig().tune.space) == {"lr", "model.hidden", "model.layers",
                                                "model.dropout"}

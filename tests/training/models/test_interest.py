"""The interest transformer (training/models/interest.py): causality, padding, config errors.

A real, small model on CPU in eval mode (no dropout), with hand-made event sequences: every
check runs in well under a second.
"""

from __future__ import annotations

import re

import pytest
import torch

from training.models.config import InterestModelConfig
from training.models.interest import InterestTransformer

ITEMS, GENRES, TEXT_DIM, MAX_LEN = 40, 4, 8, 12
DAY = 86_400
START = 880_000_000  # epoch seconds, inside MovieLens-100K's time span


def _config(text_dim: int) -> InterestModelConfig:
    return InterestModelConfig(num_items=ITEMS, num_genres=GENRES, max_len=MAX_LEN, hidden=16,
                               layers=2, heads=2, dropout=0.0, text_dim=text_dim,
                               lm_mode="frozen" if text_dim else "none")


@pytest.fixture(scope="module", params=["ids only", "frozen text"])
def model(request) -> InterestTransformer:
    """An untrained model: ids only, or with (random) precomputed item-text embeddings."""
    text_dim = TEXT_DIM if request.param == "frozen text" else 0
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(ITEMS + 1, TEXT_DIM, generator=generator) if text_dim else None
    genres = (torch.rand(ITEMS + 1, GENRES, generator=generator) > 0.6).float()
    genres[0] = 0
    torch.manual_seed(0)
    return InterestTransformer(_config(text_dim), text, genres).eval()


def _sequences() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(2, MAX_LEN) left-padded histories: 9 events after 3 pads, and 12 events."""
    generator = torch.Generator().manual_seed(1)
    items = torch.randint(1, ITEMS + 1, (2, MAX_LEN), generator=generator)
    ratings = torch.randint(2, 11, (2, MAX_LEN), generator=generator).float() / 2
    gaps = torch.randint(60, 3 * DAY, (2, MAX_LEN), generator=generator)
    stamps = START + gaps.cumsum(1)
    items[0, :3], ratings[0, :3], stamps[0, :3] = 0, float("nan"), 0
    ratings[1, 4] = float("nan")  # an unrated event
    return items, ratings, stamps


def _history(length: int, items: list[int], ratings: list[float], stamps: list[int]):
    """One history left-padded with item 0 to ``length`` (ratings NaN, stamps 0 there)."""
    pad = length - len(items)
    return (torch.tensor([[0] * pad + items]),
            torch.tensor([[float("nan")] * pad + ratings]),
            torch.tensor([[0] * pad + stamps]))


def _outputs(model: InterestTransformer, items, ratings, stamps) -> dict[str, torch.Tensor]:
    """Per-position outputs: hidden states, intent logits, the decayed history as of each event."""
    with torch.no_grad():
        hidden = model.encode(items, ratings, stamps)
        return {"hidden": hidden, "intent": model.intent(hidden),
                "pooled": model.decayed_history(items, stamps, stamps)}


def _later(field: str, items, ratings, stamps, t: int):
    """The same sequences with every event after position ``t`` changed in ``field``."""
    items, ratings, stamps = items.clone(), ratings.clone(), stamps.clone()
    if field == "items":
        items[:, t + 1:] = items[:, t + 1:] % ITEMS + 1  # another real item, never 0
    elif field == "ratings":
        ratings[:, t + 1:] = 6.0 - ratings[:, t + 1:].nan_to_num(3.0)
    else:
        stamps[:, t + 1:] += 30 * DAY  # the gap into event t+1 jumps by 30 days
    return items, ratings, stamps


@pytest.mark.parametrize("field", ["items", "ratings", "stamps"])
@pytest.mark.parametrize("t", [3, 7])
def test_a_position_never_sees_later_events(model, field, t):
    before = _outputs(model, *_sequences())
    after = _outputs(model, *_later(field, *_sequences(), t))
    for name in before:
        assert torch.allclose(after[name][:, :t + 1], before[name][:, :t + 1], atol=1e-6,
                              rtol=0), f"{name} at positions <= {t} changed with later {field}"
    # ...while every later position does see the change (the model is not just constant)
    moved = (after["hidden"][:, t + 1:] - before["hidden"][:, t + 1:]).abs().amax(-1)  # (2, T-t-1)
    assert bool((moved > 1e-6).all()), f"hidden states after {t} ignore later {field}: {moved}"


def test_user_state_is_the_last_positions_hidden_state_and_scores_real_items(model):
    items, ratings, stamps = _sequences()
    state = model.user_state(items, ratings, stamps)
    assert torch.equal(state, _outputs(model, items, ratings, stamps)["hidden"][:, -1])
    scores = model.score_items(state)
    assert scores.shape == (2, ITEMS + 1)
    assert bool(torch.isneginf(scores[:, 0]).all()) and bool(torch.isfinite(scores[:, 1:]).all())


def test_padding_content_is_masked_out(model):
    """Whatever ratings and timestamps stand beside item 0, the real events' outputs hold."""
    items, ratings, stamps = _sequences()
    noisy_ratings, noisy_stamps = ratings.clone(), stamps.clone()
    noisy_ratings[0, :3] = torch.tensor([5.0, 1.0, 3.5])
    noisy_stamps[0, :3] = torch.tensor([START + 99 * DAY, 7, START])
    clean = _outputs(model, items, ratings, stamps)
    noisy = _outputs(model, items, noisy_ratings, noisy_stamps)
    for name in clean:
        assert torch.allclose(noisy[name][0, 3:], clean[name][0, 3:], atol=1e-6, rtol=0), name
        assert torch.equal(noisy[name][1], clean[name][1]), name


def test_a_history_is_scored_the_same_beside_any_other_history(model):
    """Rows of a batch never mix: a short history alone equals it beside a full one."""
    items, ratings, stamps = _sequences()
    together = model.user_state(items, ratings, stamps)
    alone = model.user_state(items[:1], ratings[:1], stamps[:1])
    assert torch.allclose(alone[0], together[0], atol=1e-6, rtol=0)


def test_more_left_padding_gives_the_same_outputs_for_the_real_events(model):
    events = ([5, 17, 3, 29, 11], [4.0, 5.0, 2.5, 3.0, float("nan")],
              [START, START + 600, START + DAY, START + 3 * DAY, START + 3 * DAY + 60])
    short = _history(5, *events)  # no padding at all
    base = _outputs(model, *short)
    base_state = model.user_state(*short)
    for length in (6, 9, MAX_LEN):
        padded = _history(length, *events)
        out = _outputs(model, *padded)
        for name in base:
            assert torch.allclose(out[name][:, -5:], base[name], atol=1e-5, rtol=0), (
                f"{name} changed with {length - 5} pads")
        state = model.user_state(*padded)
        assert torch.allclose(state, base_state, atol=1e-5, rtol=0), length
        assert torch.allclose(model.score_items(state)[:, 1:],
                              model.score_items(base_state)[:, 1:], atol=1e-5, rtol=0)


def test_a_sequence_longer_than_max_len_is_refused(model):
    items = torch.ones(1, MAX_LEN + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=f"sequence length {MAX_LEN + 1} > max_len={MAX_LEN}"):
        model.encode(items, torch.full((1, MAX_LEN + 1), 4.0), torch.zeros_like(items))


def _naming(*fragments: str) -> str:
    """A pattern that matches a message containing every fragment, in any order."""
    return r"(?s)\A" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)


VALID = {"num_items": 10, "max_len": 8, "hidden": 64, "heads": 2}


@pytest.mark.parametrize("settings, fragments", [
    ({"heads": 3}, ["heads=3 must divide hidden=64"]),
    ({"hidden": 30, "heads": 4}, ["heads=4 must divide hidden=30"]),
    ({"num_items": 0}, ["num_items", "=0", " 1"]),
    ({"num_items": -3}, ["num_items", "=-3"]),
    ({"softmax": "softer"}, ["softmax", "'softer'", "'full' or 'sampled'"]),
    ({"lm_mode": "finetune"}, ["'finetune'", "text_dim > 0", "text_dim=0"]),
])
def test_config_errors_name_the_offending_values(settings, fragments):
    with pytest.raises(ValueError, match=_naming(*fragments)):
        InterestModelConfig(**{**VALID, **settings})


def test_config_saves_and_loads_to_the_same_model(model, tmp_path):
    model.cfg.save(tmp_path)
    loaded = InterestModelConfig.load(tmp_path)
    assert loaded == model.cfg
    text = model.text if model.cfg.text_dim else None
    again = InterestTransformer(loaded, text, model.genres)
    again.load_state_dict(model.state_dict())
    items, ratings, stamps = _sequences()
    assert torch.equal(again.eval().user_state(items, ratings, stamps),
                       model.user_state(items, ratings, stamps))

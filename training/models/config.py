"""The interest model's configuration, in one place: what a preset sets and what data fixes.

``ModelConfig`` is the ``training.model`` section of a preset: architecture, LM mode, losses.
``InterestModelConfig`` is that plus what the dataset decides (catalogue size, genres,
ratings, the LM's width); training builds it, every checkpoint and packaged model saves it as
``config.json``, and ``InterestTransformer`` (interest.py) reads nothing else. Both are
pydantic models that refuse unknown keys, so a Ray Train worker, a checkpoint and a packaged
model are validated the same way. This module imports no torch: loading a preset stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from data.config import StrictModel

LMMode = Literal["frozen", "finetune", "lora", "none"]
TUNED: tuple[str, ...] = ("finetune", "lora")


class LossWeights(StrictModel):
    """Weight of each head's loss in the total (a head switched off contributes nothing)."""

    next: float = Field(1.0, ge=0)  # evolution: next item
    rating: float = Field(0.5, ge=0)  # intensity: rating of the next item
    like: float = Field(0.5, ge=0)  # decay: P(like) of the next item
    intent: float = Field(0.5, ge=0)  # intent: the next item's genres


class ModelConfig(StrictModel):
    """Interest transformer size, LM mode and losses (the ``training.model`` preset section).

    Args:
        hidden: model width D; ``heads`` must divide it.
        layers: transformer blocks. heads: attention heads.
        dropout: dropout on embeddings, attention and residuals.
        lm_mode: how the item tower uses the pretrained LM (``features.lm.model``):
            frozen: precomputed LM item embeddings from Feast; none: ids only (SASRec-style);
            finetune: the top ``lm_layers`` LM layers train jointly on item text; lora: peft
            LoRA adapters on those layers (the LM weights stay as loaded); auto: lora when
            ``training.use_gpu``, frozen otherwise. See text_tower.py.
        lm_layers: finetune/lora: top LM layers that train (the ones below are computed once
            per item).
        lm_items_per_step: finetune/lora: items whose text runs through the trained layers per
            step (a random subset of the batch's items; the rest use embeddings refreshed
            every epoch); 0 = all.
        lm_chunk: finetune/lora: items per LM forward pass (memory bound).
        lm_cache_dir: finetune/lora: folder of saved frozen-layer outputs; None =
            ~/.cache/irec/text-tower, "" = never save or read them.
        lora_rank: LoRA rank r. lora_alpha: LoRA scale alpha (the update is alpha / r * BA).
        lora_dropout: dropout on the LoRA branch.
        lora_targets: Linear modules in each trained LM layer that get adapters.
        use_time: time-gap input embedding and the decay head's time decay (off anyway when
            the dataset has no real timestamps).
        time_buckets: log2-minute buckets of the gap between consecutive events.
        like_threshold: a rating at or above this is a "like" (decay head label).
        softmax: "full" cross-entropy over all items, or "sampled" with ``num_negatives``.
        num_negatives: shared uniform negatives per batch for the sampled softmax.
        loss_weights: weight per head: next, rating, like, intent.
    """

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    lm_mode: Literal["auto", "frozen", "finetune", "lora", "none"] = "auto"
    lm_layers: int = Field(1, ge=1)
    lm_items_per_step: int = Field(128, ge=0)
    lm_chunk: int = Field(64, ge=1)
    lm_cache_dir: str | None = None
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(["query", "value"], min_length=1)
    use_time: bool = True
    time_buckets: int = Field(24, ge=1)
    like_threshold: float = 4.0
    softmax: Literal["full", "sampled"] = "full"
    num_negatives: int = Field(1024, ge=1)
    loss_weights: LossWeights = LossWeights()

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"heads={self.heads} must divide hidden={self.hidden}")
        return self

    def resolved_lm_mode(self, use_gpu: bool) -> LMMode:
        """The LM mode ``auto`` stands for: lora on GPU workers, frozen on CPU."""
        if self.lm_mode != "auto":
            return self.lm_mode
        return "lora" if use_gpu else "frozen"


class InterestModelConfig(ModelConfig):
    """A preset's ``ModelConfig`` resolved against one dataset: what a trained model is.

    Args (beyond ``ModelConfig``'s):
        num_items: largest item id; ids run 1..num_items and 0 is padding.
        num_genres: number of intent categories; 0 switches the intent head off.
        max_len: events per sequence (the Feast history length N).
        text_dim: width of the LM item embeddings; 0 = ids only (``lm_mode`` none).
        lm_mode: resolved (never auto): none, frozen, finetune or lora.
        lm_path: finetune/lora: the Hugging Face LM directory; None = the offline
            all-MiniLM-L6-v2 weights, resolved where the tower is built (a Ray worker
            resolves its own install).
        lm_max_length: finetune/lora (required there): tokens per item text; training sets
            it to ``features.lm.max_length``, the length the Feast embeddings used.
        use_ratings: rating input embedding and the intensity + decay heads.
        rating_max: ratings are bucketed in steps of 0.5 up to this value.
    """

    num_items: int = Field(ge=1)
    num_genres: int = Field(0, ge=0)
    max_len: int = Field(ge=1)
    text_dim: int = Field(0, ge=0)
    lm_mode: LMMode = "none"
    lm_path: str | None = None
    lm_max_length: int | None = Field(None, ge=8)
    use_ratings: bool = True
    rating_max: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _lm_matches_text(self) -> InterestModelConfig:
        if (self.lm_mode == "none") != (self.text_dim == 0):
            raise ValueError(f"lm_mode={self.lm_mode!r} needs "
                             f"{'text_dim=0' if self.lm_mode == 'none' else 'text_dim > 0'}, "
                             f"got text_dim={self.text_dim}")
        if self.tuned and self.lm_max_length is None:
            raise ValueError(f"lm_mode={self.lm_mode!r} needs lm_max_length (tokens per item "
                             "text), got None")
        return self

    @property
    def tuned(self) -> bool:
        """The LM trains with the model (finetune or lora): the model has a text tower."""
        return self.lm_mode in TUNED

    def save(self, directory: Path) -> None:
        (Path(directory) / "config.json").write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: Path) -> InterestModelConfig:
        return cls.model_validate_json((Path(directory) / "config.json").read_text())

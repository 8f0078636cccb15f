"""The interest transformer: a causal Hugging Face GPT-2 over a user's event sequence.

Event token t = item vector(item_t) + rating embedding(r_t) + time-gap embedding(ts_t - ts_t-1)
Item vector(i) = id embedding(i) + W · (pretrained-LM text embedding of item i)

The hidden state h_t summarises events 0..t and predicts event t+1 with four heads, trained
jointly (multi-task fusion, weights in the config):
- evolution: next item over the whole catalogue, logits h_t · item vector (tied, SASRec-like);
  full softmax, or sampled softmax with shared uniform negatives for large catalogues;
- intensity: the rating of the next item, from h_t and its item vector;
- decay: P(like) of the next item (rating >= like_threshold), from h_t, the item vector and a
  history pooled with learnable exponential decay exp(-softplus(lambda) * age in days);
- intent: the next item's genre distribution (soft-target cross-entropy).
Heads the data cannot support are switched off in the config (no ratings: intensity and
decay; no timestamps: time gaps and decay; no genres: intent).

The config (``InterestModelConfig``, every field documented) lives in ``config.py`` beside
this file, so that loading a preset never imports torch.

LM modes (``cfg.lm_mode``): "none" (ids only), "frozen" (the ``text`` buffer holds the Feast
item-text embeddings), "finetune" and "lora" (the LM's top layers, or LoRA adapters on them,
train with the model; see ``text_tower.py``). In the trained modes ``text``
is a cache of the tower's embeddings of the whole catalogue. A training step recomputes, with
gradients, the embeddings of (up to ``items_per_step`` of) the batch's items and uses the cache
for every other item, the full-softmax catalogue and sampled negatives included: those
logits see text embeddings up to one epoch stale and pass no gradient into the LM. The cache
is refreshed from the current weights whenever the model is switched to eval mode after
training steps (``train(False)``, so once per epoch, before validation), which makes eval
scores, checkpoints and ``export_frozen()`` consistent with the weights. ``export_frozen()``
returns the equivalent "frozen" model (the tuned embeddings in ``text``, no LM), which is what
serving packages: it scores exactly as the tuned model does in eval mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model

from training.models.config import InterestModelConfig
from training.models.text_tower import TextTower

DAY = 86_400.0


def _text_loaded(module: InterestTransformer, incompatible) -> None:
    """A loaded state brings the text cache of its own (trained) weights."""
    if "text" not in incompatible.missing_keys:
        module._text_stale = False


class InterestTransformer(nn.Module):
    def __init__(self, cfg: InterestModelConfig, text_embeddings: torch.Tensor | None = None,
                 item_genres: torch.Tensor | None = None,
                 item_texts: list[str] | None = None) -> None:
        """``text_embeddings`` (I+1, text_dim): the "frozen" buffer. "finetune"/"lora" need
        ``item_texts`` (I+1 strings, "" = none); their text cache starts as
        ``text_embeddings`` when given (the Feast view: the same LM, text and pooling, so the
        tower's own output up to float rounding, replaced at the first refresh), else as
        the tower's embeddings of the catalogue."""
        super().__init__()
        self.cfg = cfg
        n, d = cfg.num_items + 1, cfg.hidden
        self.item_id = nn.Embedding(n, d, padding_idx=0)
        self.text_tower: TextTower | None = None
        self._text_stale = False  # trained since the text cache was last refreshed
        if cfg.tuned:
            if item_texts is None or len(item_texts) != n:
                got = None if item_texts is None else len(item_texts)
                raise ValueError(f"lm_mode {cfg.lm_mode} needs item_texts for {n} ids, got {got}")
            self.text_tower = TextTower(cfg, item_texts)
            if self.text_tower.dim != cfg.text_dim:
                raise ValueError(f"text_dim={cfg.text_dim} but the LM is "
                                 f"{self.text_tower.dim}-d")
            if text_embeddings is None or tuple(text_embeddings.shape) != (n, cfg.text_dim):
                text_embeddings = self.text_tower.embed_all()
            else:
                self._text_stale = True
            self.register_load_state_dict_post_hook(_text_loaded)
            # every rank computes the same frozen-layer cache: DDP need not broadcast it
            self._ddp_params_and_buffers_to_ignore = [
                f"text_tower.{name}" for name, _ in self.text_tower.named_buffers()]
        if cfg.text_dim:
            if text_embeddings is None or tuple(text_embeddings.shape) != (n, cfg.text_dim):
                got = None if text_embeddings is None else tuple(text_embeddings.shape)
                raise ValueError(f"text_embeddings must be ({n}, {cfg.text_dim}), got {got}")
            self.register_buffer("text", text_embeddings.float(), persistent=True)
            self.text_proj = nn.Linear(cfg.text_dim, d, bias=False)
        if cfg.num_genres:
            if item_genres is None or tuple(item_genres.shape) != (n, cfg.num_genres):
                got = None if item_genres is None else tuple(item_genres.shape)
                raise ValueError(f"item_genres must be ({n}, {cfg.num_genres}), got {got}")
            self.register_buffer("genres", item_genres.float(), persistent=True)
            self.intent_head = nn.Linear(d, cfg.num_genres)
        self.rating_emb = nn.Embedding(int(cfg.rating_max * 2) + 2, d, padding_idx=0)
        self.gap_emb = nn.Embedding(cfg.time_buckets + 1, d, padding_idx=0)
        self.backbone = GPT2Model(GPT2Config(
            vocab_size=1, n_positions=cfg.max_len, n_embd=d, n_layer=cfg.layers,
            n_head=cfg.heads, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, bos_token_id=None, eos_token_id=None))
        self.rating_head = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.like_head = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.decay_rate = nn.Parameter(torch.tensor(math.log(math.e - 1) - 3.0))  # ~0.05/day
        self.rating_bias = nn.Parameter(torch.tensor(3.5))
        for emb in (self.item_id, self.rating_emb, self.gap_emb):  # GPT-2's init scale
            nn.init.normal_(emb.weight, std=0.02)
            emb.weight.data[0].zero_()

    # -- item side ---------------------------------------------------------------------
    def item_vectors(self, ids: torch.Tensor | None = None,
                     text: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) vectors of ``ids``, or (I+1, D) for the whole catalogue.

        ``text`` (I+1, text_dim) replaces the ``text`` buffer (a training step's table)."""
        if ids is None:
            ids = torch.arange(self.cfg.num_items + 1, device=self.item_id.weight.device)
        vec = self.item_id(ids)
        if self.cfg.text_dim:
            vec = vec + self.text_proj((self.text if text is None else text)[ids])
        return vec

    def _step_text(self, items: torch.Tensor) -> torch.Tensor | None:
        """(I+1, text_dim) text table of one training step, or None (use the buffer).

        Fresh, differentiable tower embeddings for up to ``items_per_step`` random items of
        the batch; the cache for the others."""
        if self.text_tower is None or not self.training:
            return None
        ids = torch.unique(items)  # (U,)
        ids = ids[self.text_tower.has_text[ids]]
        limit = self.cfg.lm_items_per_step
        if limit and len(ids) > limit:
            ids = ids[torch.randperm(len(ids), device=ids.device)[:limit]]
        self._text_stale = True
        return self.text.index_put((ids,), self.text_tower(ids))

    def lm_parameters(self) -> list[nn.Parameter]:
        """The trainable LM parameters (top layers, or LoRA adapters); [] without a tower."""
        if self.text_tower is None:
            return []
        return [p for p in self.text_tower.parameters() if p.requires_grad]

    @torch.no_grad()
    def refresh_text(self) -> None:
        """Recompute the ``text`` cache of the whole catalogue from the tower's weights."""
        if self.text_tower is not None:
            self.text.copy_(self.text_tower.embed_all())
        self._text_stale = False

    def train(self, mode: bool = True) -> InterestTransformer:
        """Switching to eval mode after training steps refreshes the text cache."""
        super().train(mode)
        if not mode and self._text_stale:
            self.refresh_text()
        return self

    def export_frozen(self) -> InterestTransformer:
        """The equivalent "frozen"-mode model: tuned text embeddings in ``text``, no LM.

        It scores exactly as this model does in eval mode; serving packages it."""
        if self.text_tower is None:
            return self
        was = self.training
        self.eval()
        cfg = self.cfg.model_copy(update={"lm_mode": "frozen"})
        genres = self.genres.clone() if self.cfg.num_genres else None
        frozen = InterestTransformer(cfg, self.text.clone(), genres).to(self.text.device)
        frozen.load_state_dict({k: v for k, v in self.state_dict().items()
                                if not k.startswith("text_tower.")})
        self.train(was)
        return frozen.eval()

    # -- sequence side -----------------------------------------------------------------
    def _rating_bucket(self, ratings: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(ratings)
        return torch.where(known, (ratings.nan_to_num(0) * 2).round().long() + 1, 0)

    def _gap_bucket(self, stamps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gaps = (stamps[:, 1:] - stamps[:, :-1]).clamp(min=0).float() / 60.0  # (B, T-1) minutes
        bucket = torch.log2(1 + gaps).floor().long().clamp(max=self.cfg.time_buckets - 1) + 1
        bucket = F.pad(bucket, (1, 0))  # the first event has no gap
        return torch.where(mask & F.pad(mask[:, :-1], (1, 0)), bucket, 0)

    def encode(self, items: torch.Tensor, ratings: torch.Tensor, stamps: torch.Tensor,
               text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) hidden states; sequences are left-padded with item 0."""
        if items.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence length {items.shape[1]} > max_len={self.cfg.max_len}")
        mask = items > 0  # (B, T)
        x = self.item_vectors(items, text)  # (B, T, D)
        if self.cfg.use_ratings:
            x = x + self.rating_emb(self._rating_bucket(ratings))
        if self.cfg.use_time:
            x = x + self.gap_emb(self._gap_bucket(stamps, mask))
        # Positions count from each sequence's first real event, not from the tensor's left
        # edge: the same history gets the same outputs however much left padding it carries.
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        out = self.backbone(inputs_embeds=x, attention_mask=mask.long(), position_ids=positions)
        return out.last_hidden_state  # (B, T, D)

    def decayed_history(self, items: torch.Tensor, stamps: torch.Tensor, at: torch.Tensor,
                        text: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, D): for query time at[b, q], history events j <= q pooled with decay.

        ``at`` is (B, Q) with Q == T (one query per position, causal) or Q == 1 (the
        request time over the whole history).
        """
        vec = self.item_vectors(items, text)  # (B, T, D)
        age = (at.unsqueeze(2) - stamps.unsqueeze(1)).clamp(min=0).float() / DAY  # (B, Q, T)
        weight = torch.exp(-F.softplus(self.decay_rate) * age)
        allowed = (items > 0).unsqueeze(1)  # (B, 1, T)
        if at.shape[1] == items.shape[1]:
            allowed = allowed & torch.ones_like(weight, dtype=torch.bool).tril()
        weight = weight * allowed
        return weight @ vec / weight.sum(-1, keepdim=True).clamp(min=1e-6)  # (B, Q, D)

    def pair_features(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, v, h * v], dim=-1)  # (..., 3D)

    def rating(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.rating_bias + self.rating_head(self.pair_features(h, v)).squeeze(-1)

    def like_logit(self, h: torch.Tensor, v: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.like_head(torch.cat([h + pooled, v, h * v], dim=-1)).squeeze(-1)

    def intent(self, h: torch.Tensor) -> torch.Tensor:
        return self.intent_head(h)  # (..., G) logits

    def losses(self, items: torch.Tensor, ratings: torch.Tensor,
               stamps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head losses of predicting event t+1 from events <= t, and their weighted total."""
        cfg = self.cfg
        text = self._step_text(items)  # (I+1, text_dim) or None
        h = self.encode(items[:, :-1], ratings[:, :-1], stamps[:, :-1], text)  # (B, T-1, D)
        target = items[:, 1:]  # (B, T-1)
        valid = (target > 0) & (items[:, :-1] > 0)
        hv, tv = h[valid], target[valid]  # (P, D), (P,)
        out: dict[str, torch.Tensor] = {"next": self._next_item_loss(hv, tv, text)}
        v = self.item_vectors(tv, text)  # (P, D)
        target_rating = ratings[:, 1:][valid]
        rated = ~torch.isnan(target_rating)
        if cfg.use_ratings and rated.any():
            pred = self.rating(hv[rated], v[rated])
            out["rating"] = F.mse_loss(pred, target_rating[rated])
            if cfg.use_time:
                pooled = self.decayed_history(items[:, :-1], stamps[:, :-1], stamps[:, 1:],
                                              text)[valid]
            else:
                pooled = torch.zeros_like(hv)
            logit = self.like_logit(hv[rated], v[rated], pooled[rated])
            liked = (target_rating[rated] >= cfg.like_threshold).float()
            out["like"] = F.binary_cross_entropy_with_logits(logit, liked)
        if cfg.num_genres:
            dist = self.genres[tv]  # (P, G)
            has = dist.sum(-1) > 0
            if has.any():
                soft = dist[has] / dist[has].sum(-1, keepdim=True)
                out["intent"] = -(soft * F.log_softmax(self.intent(hv[has]), -1)).sum(-1).mean()
        out["total"] = sum(getattr(cfg.loss_weights, k) * v for k, v in out.items())
        return out

    def forward(self, items: torch.Tensor, ratings: torch.Tensor,
                stamps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward pass: the losses (so DDP's gradient hooks see it)."""
        return self.losses(items, ratings, stamps)

    def _next_item_loss(self, h: torch.Tensor, target: torch.Tensor,
                        text: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.softmax == "full":
            logits = h @ self.item_vectors(None, text).T  # (P, I+1)
            logits[:, 0] = -torch.inf
            return F.cross_entropy(logits, target)
        negatives = torch.randint(1, self.cfg.num_items + 1, (self.cfg.num_negatives,),
                                  device=h.device)
        pos = (h * self.item_vectors(target, text)).sum(-1, keepdim=True)  # (P, 1)
        neg = h @ self.item_vectors(negatives, text).T  # (P, K)
        neg = neg.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), -torch.inf)
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target))

    @torch.no_grad()
    def user_state(self, items: torch.Tensor, ratings: torch.Tensor,
                   stamps: torch.Tensor) -> torch.Tensor:
        """(B, D) state after the last event of each left-padded history."""
        return self.encode(items, ratings, stamps)[:, -1]

    @torch.no_grad()
    def score_items(self, state: torch.Tensor) -> torch.Tensor:
        """(B, I+1) retrieval scores over the catalogue (column 0 is padding)."""
        scores = state @ self.item_vectors().T
        scores[:, 0] = -torch.inf
        return scores

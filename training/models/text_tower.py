"""The trainable LM item tower of the ``finetune`` and ``lora`` LM modes.

The interest model's item vector adds a projection of the item's text embedding (see
``interest.py``). In ``frozen`` mode that embedding is the Feast ``item_text_embedding`` view;
here the language model itself trains jointly with the recommender:

- ``finetune``: the top ``lm_layers`` transformer layers of the LM train in full;
- ``lora``: peft LoRA adapters on the top ``lm_layers`` layers' ``lora_targets`` projections;
  the LM's own weights never change.

The token embeddings and the layers below the trained ones are frozen and deterministic, so
their output is computed once per item when the tower is built and kept as a (I+1, S, H)
buffer: a training step runs only the trained top layers, and only for (a random subset of,
``lm_items_per_step``) the items of the batch. Items are bucketed by token length before each
run, so padding costs little. The embedding is the same as the Feast one: masked mean pooling
over the tokens, L2-normalised (all-MiniLM-L6-v2's pooling); with the trained layers still at
their pretrained weights the tower reproduces the frozen embeddings. The tower keeps only the
trained layers; checkpoints carry those (and the LoRA adapters), not the frozen LM.

Cost, on CPU: one MiniLM layer forward + backward over 128 titles of about 15 tokens is roughly
20 GFLOP, one or two seconds on 2 cores; the frozen layers' pass over all 1,682 ML-100K titles
is ten to thirty. That pass is saved under ``lm_cache_dir`` (keyed by the LM's files, the frozen
depth, max_length and the texts), so the next build on the machine (a restarted Ray worker,
loading the best checkpoint, the next run) reads it instead; the values are the same bits.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask

from training.models.config import InterestModelConfig

DEFAULT_CACHE = Path.home() / ".cache" / "irec" / "text-tower"


def resolve_path(path: str | Path | None) -> str:
    """The LM directory: ``path``, or the packaged all-MiniLM-L6-v2 weights when None."""
    if path:
        return str(path)
    from features.lm import default_model_path

    return str(default_model_path())


def describe(path: str | Path | None) -> tuple[int, int]:
    """(hidden width, transformer layers) of the LM at ``path``, from its config only."""
    config = AutoConfig.from_pretrained(resolve_path(path))
    return int(config.hidden_size), int(config.num_hidden_layers)


def _cache_file(cfg: InterestModelConfig, path: str, frozen: int, texts: list[str]) -> Path | None:
    """Where the frozen-layer outputs of this LM, depth and item texts are saved."""
    if cfg.lm_cache_dir == "":
        return None
    folder = Path(path)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                   for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
    key = json.dumps([str(Path(path).resolve()), files, frozen, cfg.lm_max_length, texts])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cfg.lm_cache_dir or DEFAULT_CACHE) / f"{digest}.pt"


class TextTower(nn.Module):
    """(N,) item ids -> (N, H) text embeddings through the LM's trained top layers."""

    def __init__(self, cfg: InterestModelConfig, texts: list[str]) -> None:
        """``texts[i]`` is item i's text (``features.tables.item_text``); "" = none."""
        super().__init__()
        self.cfg = cfg
        path = resolve_path(cfg.lm_path)
        lm = AutoModel.from_pretrained(path).eval()
        stack = getattr(getattr(lm, "encoder", None), "layer", None)
        if not isinstance(stack, nn.ModuleList):
            raise ValueError(f"{path}: {type(lm).__name__} has no encoder.layer list; the "
                             "finetune/lora modes need a BERT-style encoder")
        if cfg.lm_layers > len(stack):
            raise ValueError(f"text tower layers={cfg.lm_layers} > the {len(stack)} layers of "
                             f"{path}")
        self.lm_config = lm.config
        self.dim = int(lm.config.hidden_size)
        tokens = AutoTokenizer.from_pretrained(path)(
            [t or "" for t in texts], padding=True, truncation=True,
            max_length=cfg.lm_max_length, return_tensors="pt")
        # (I+1,): items with text; padding id 0 and text-less items embed to zeros
        self.register_buffer("has_text", torch.tensor([bool(t) for t in texts]),
                             persistent=False)
        self.register_buffer("mask", tokens["attention_mask"], persistent=False)  # (I+1, S)
        self.register_buffer("length", self.mask.sum(1), persistent=False)  # (I+1,)
        frozen = len(stack) - cfg.lm_layers
        saved = _cache_file(cfg, path, frozen, texts)
        shape = (*self.mask.shape, self.dim)  # (I+1, S, H)
        base = torch.load(saved, weights_only=True) if saved and saved.exists() else None
        if base is None or tuple(base.shape) != shape:
            base = self._frozen_output(lm, stack[:frozen], tokens["input_ids"])
            if saved is not None:
                saved.parent.mkdir(parents=True, exist_ok=True)
                partial = saved.with_suffix(f".{os.getpid()}.tmp")
                torch.save(base, partial)
                os.replace(partial, saved)
        # frozen layers' output: rebuilt or read from the cache, never in a checkpoint
        self.register_buffer("base", base, persistent=False)  # (I+1, S, H)
        self.layers = nn.ModuleList(stack[len(stack) - cfg.lm_layers:])
        for p in self.layers.parameters():
            p.requires_grad_(cfg.lm_mode == "finetune")
        if cfg.lm_mode == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            inject_adapter_in_model(LoraConfig(
                r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets)), self.layers)
            for name, p in self.layers.named_parameters():
                p.requires_grad_("lora_" in name)
            if not any(p.requires_grad for p in self.layers.parameters()):
                raise ValueError(f"lora_targets={cfg.lora_targets} match no Linear module of "
                                 f"the top {cfg.lm_layers} layer(s) of {path}")
        self.train()

    @torch.no_grad()
    def _frozen_output(self, lm, bottom, input_ids: torch.Tensor) -> torch.Tensor:
        """(I+1, S, H) token states after the embeddings and the ``bottom`` layers."""
        embedded = lm.embeddings(input_ids=input_ids,
                                 token_type_ids=torch.zeros_like(input_ids))  # (I+1, S, H)
        base = torch.zeros_like(embedded)
        ids = torch.nonzero(self.has_text).squeeze(1)
        for pos, width in self._buckets(ids):
            rows = ids[pos]
            base[rows, :width] = self._run(bottom, embedded[rows, :width],
                                           self.mask[rows, :width])
        return base

    def _buckets(self, ids: torch.Tensor):
        """Chunks of positions into ``ids``, by token length, each with its longest length."""
        order = torch.argsort(self.length[ids], stable=True)
        for start in range(0, len(order), self.cfg.lm_chunk):
            pos = order[start:start + self.cfg.lm_chunk]
            yield pos, int(self.length[ids[pos]].max())

    def _run(self, layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, S, H) through ``layers`` with the (N, S) padding mask."""
        attention = create_bidirectional_mask(config=self.lm_config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for layer in layers:
            hidden = layer(hidden, attention)
        return hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, H) L2-normalised, mean-pooled embeddings of items ``ids`` (all with text)."""
        if not bool(self.has_text[ids].all()):
            bad = ids[~self.has_text[ids]][:5].tolist()
            raise ValueError(f"items {bad} have no text to embed")
        out = torch.zeros(len(ids), self.dim, device=ids.device)
        for pos, width in self._buckets(ids):
            rows = ids[pos]
            mask = self.mask[rows, :width]  # (n, s)
            hidden = self._run(self.layers, self.base[rows, :width], mask)  # (n, s, H)
            weight = mask.unsqueeze(-1).to(hidden.dtype)  # (n, s, 1)
            pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)  # (n, H)
            out = out.index_put((pos,), F.normalize(pooled, dim=-1))
        return out

    @torch.no_grad()
    def embed_all(self) -> torch.Tensor:
        """(I+1, H) eval-mode embeddings of the whole catalogue; zeros for text-less items."""
        was = self.training
        self.eval()
        ids = torch.nonzero(self.has_text).squeeze(1)
        table = torch.zeros(len(self.has_text), self.dim, device=ids.device)
        table[ids] = self(ids)
        self.train(was)
        return table

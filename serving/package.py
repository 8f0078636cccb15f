"""Save trained interest models to the BentoML model store, load them back verified, promote.

A saved model is a folder in the store (``$BENTOML_HOME``, default ``~/bentoml``) holding:
``model.safetensors`` (weights and item buffers), ``config.json`` (architecture),
``items.json`` (item id -> raw id, title, genres), ``item_vectors.safetensors`` (the item
matrix retrieval scores against), ``metrics.json``, and ``MANIFEST.json``: the sha256 of every
other file, and of the model's metadata (BentoML keeps it in its own ``model.yaml``, beside
fields BentoML rewrites; the digest is over the metadata's canonical JSON). The store has no
integrity check of its own; ``load`` recomputes every digest and refuses a model whose files
or metadata differ by a single byte, or that has files missing or added.
Metadata carries the dataset fingerprint, the Feast feature services with their schema hashes
(serving refuses a model whose contract differs from its feature store) and the code version.

Crash safety: BentoML copies a new model into its final folder file by file; ``save`` has it
copy into a private staging store instead, fsyncs the copy and renames the whole folder into
the store, so a model version is there complete or not at all (and the ``latest`` pointer is
replaced atomically). The champion pointer (``irec-champions.json`` beside the store) is
replaced atomically, and every promotion holds a file lock beside it, so two promotions never
interleave their read-compare-write.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bentoml
import pandas as pd
import torch
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from safetensors.torch import load_file, save_file

from data.atomic import file_lock, fsync, fsync_tree, write_text
from training.models.config import InterestModelConfig
from training.models.interest import InterestTransformer

MODEL_NAME = "interest"
MANIFEST = "MANIFEST.json"
# The manifest entry of the metadata digest (not a file: BentoML's model.yaml holds it).
METADATA_ENTRY = "model.yaml#metadata"
SCORE = "val_ndcg@10"
CHUNK_BYTES = 1 << 20


class IntegrityError(RuntimeError):
    """A stored model's files do not match its manifest."""


@dataclass
class PackagedModel:
    tag: str
    model: InterestTransformer
    items: pd.DataFrame  # item_id, raw_item_id, title, genres
    item_vectors: torch.Tensor  # (I+1, D)
    metadata: dict
    metrics: dict


def code_version() -> str:
    """The installed irec distribution's version, plus the git commit where there is one."""
    version = importlib.metadata.version("irec")
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5, check=True)
        return f"{version}+{sha.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return version


def _sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def metadata_digest(metadata: dict) -> str:
    """The sha256 of ``metadata`` as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def save(model: InterestTransformer, items: pd.DataFrame, *, metrics: dict,
         dataset_fingerprint: str, feature_services: dict[str, str],
         genre_names: list[str], name: str = MODEL_NAME, trained_until: str | None = None,
         log: Callable[[str], None] = print) -> str:
    """Write a model version to the store; returns its tag (``interest:<version>``).

    ``trained_until``: the time of the last event trained on (ISO), so that a later gate can
    tell whether this model saw the window it is judged on."""
    model = model.eval()
    with torch.no_grad():
        vectors = model.item_vectors().contiguous()
    metadata = {
        "dataset_fingerprint": dataset_fingerprint,
        "feature_services": feature_services,
        "code_version": code_version(),
        "genre_names": genre_names,
        "num_items": model.cfg.num_items,
        SCORE: metrics.get(SCORE),
    } | ({} if trained_until is None else {"trained_until": trained_until})
    labels = {"fingerprint": dataset_fingerprint[:12], "framework": "torch"}
    with _staging_store() as staging, bentoml.models.create(
            name, labels=labels, metadata=metadata, _model_store=staging) as stored:
        root = Path(stored.path)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, root / "model.safetensors")
        model.cfg.save(root)
        save_file({"item_vectors": vectors}, root / "item_vectors.safetensors")
        table = items[["item_id", "raw_item_id", "title", "genres"]].copy()
        table["genres"] = table["genres"].map(list)
        (root / "items.json").write_text(table.to_json(orient="records"))
        (root / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        digests = {p.name: _sha256(p) for p in sorted(root.iterdir()) if p.is_file()
                   and p.name not in (MANIFEST, "model.yaml")}
        (root / MANIFEST).write_text(json.dumps(
            {**digests, METADATA_ENTRY: metadata_digest(metadata)}, indent=2))
        tag = str(stored.tag)
    score = metrics.get(SCORE)
    log(f"package: saved {tag} ({len(digests)} files"
        + (f", {SCORE} {score:.4f})" if score is not None else ")"))
    return tag


@contextmanager
def _staging_store() -> Iterator[ModelStore]:
    """A private model store beside BentoML's; on a clean exit each model saved in it is
    fsynced, renamed whole into BentoML's store and made its name's ``latest``."""
    models = Path(BentoMLContainer.model_store_dir.get())
    models.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".irec-staging-", dir=models.parent))
    try:
        yield ModelStore(staging)
        for version in sorted(p for p in staging.glob("*/*") if p.is_dir()):
            folder = models / version.parent.name
            folder.mkdir(exist_ok=True)
            fsync_tree(version)
            os.rename(version, folder / version.name)
            fsync(folder)
            write_text(folder / "latest", version.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify(root: Path, metadata: dict) -> None:
    """Raise IntegrityError unless every file and the metadata match MANIFEST.json exactly."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise IntegrityError(f"{root}: no {MANIFEST}; refusing an unverifiable model")
    expected = json.loads(manifest_path.read_text())
    recorded = expected.pop(METADATA_ENTRY, None)
    if recorded is None:
        raise IntegrityError(f"{root}: {MANIFEST} has no digest of the model's metadata (saved "
                             "by an older irec); refusing an unverifiable model: package it again")
    actual = metadata_digest(metadata)
    if actual != recorded:
        raise IntegrityError(f"{root}: metadata sha256 {actual[:16]}... != manifest "
                             f"{recorded[:16]}...; the model's metadata was changed")
    present = {p.name for p in root.iterdir() if p.is_file()} - {MANIFEST, "model.yaml"}
    if present != set(expected):
        raise IntegrityError(f"{root}: files {sorted(present)} do not match the manifest's "
                             f"{sorted(expected)}")
    for name, digest in expected.items():
        actual = _sha256(root / name)
        if actual != digest:
            raise IntegrityError(f"{root / name}: sha256 {actual[:16]}... != manifest "
                                 f"{digest[:16]}...; the stored model is corrupt")


def load(tag: str = f"{MODEL_NAME}:latest") -> PackagedModel:
    """Load a verified model from the store."""
    stored = bentoml.models.get(tag)
    root = Path(stored.path)
    verify(root, dict(stored.info.metadata))
    cfg = InterestModelConfig.load(root)
    n = cfg.num_items + 1
    text = torch.zeros(n, cfg.text_dim) if cfg.text_dim else None
    genres = torch.zeros(n, cfg.num_genres) if cfg.num_genres else None
    model = InterestTransformer(cfg, text, genres)
    model.load_state_dict(load_file(root / "model.safetensors"))
    return PackagedModel(
        tag=str(stored.tag), model=model.eval(),
        items=pd.read_json(root / "items.json", orient="records", dtype=False),
        item_vectors=load_file(root / "item_vectors.safetensors")["item_vectors"],
        metadata=dict(stored.info.metadata),
        metrics=json.loads((root / "metrics.json").read_text()),
    )


def disagreeing_ids(model_items: pd.DataFrame, store_items: pd.DataFrame) -> pd.DataFrame:
    """The model's item ids that name another raw item in ``store_items`` (or none there): a
    model and a store agree when this is empty. Columns item_id, raw_item_id_{model,store}."""
    joined = model_items[["item_id", "raw_item_id"]].merge(
        store_items[["item_id", "raw_item_id"]], on="item_id", how="left",
        suffixes=("_model", "_store"))
    missing = joined.raw_item_id_store.isna()
    return joined[missing | (joined.raw_item_id_model.astype(str)
                             != joined.raw_item_id_store.astype(str))]


def store_home() -> Path:
    """The BentoML model store's folder (``BENTOML_HOME``); irec's pointers live beside it."""
    return Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))


def _champions_file() -> Path:
    return store_home() / "irec-champions.json"


def champion(name: str = MODEL_NAME) -> str | None:
    path = _champions_file()
    return json.loads(path.read_text()).get(name) if path.exists() else None


@dataclass
class Verdict:
    promoted: bool
    message: str
    # Refused only by the comparison with the champion (``force`` would promote it).
    beaten: bool = False
    # Set when ``force`` promoted a candidate the comparison refused.
    warning: str | None = None


@dataclass
class Judged:
    """A challenger and the champion scored on the same data in the same run (retraining's
    held-out window): ``champion`` is the tag that was scored, None when there was none."""

    metric: str
    score: float
    champion: str | None
    champion_score: float | None


def promote(tag: str, margin: float = 0.0, force: bool = False,
            judged: Judged | None = None) -> Verdict:
    """Make ``tag`` the champion if its score beats the champion's by ``margin``.

    The scores are the stored validation NDCG@10s, or with ``judged`` the ones both models got
    on the same data in the caller's run; then a champion that changed since it was scored is
    not compared with at all (the verdict refuses and says so). A score that is missing or not
    a number never promotes, even with ``force``; otherwise ``force`` promotes whatever the
    comparison says (and the verdict carries a warning). A champion that can no longer be
    loaded (deleted, or failing its manifest) is replaced, and the verdict says why: serving
    would refuse it as well. The read-compare-write holds a file lock beside the champion
    pointer, so concurrent promotions leave the best one champion.
    """
    candidate = load(tag)
    name = candidate.tag.split(":")[0]
    metric = SCORE if judged is None else judged.metric
    score = candidate.metrics.get(SCORE) if judged is None else judged.score
    if score is None or not math.isfinite(score):
        return Verdict(False, f"{candidate.tag} has {metric}={score}; not promoted"
                              + (" (forcing never promotes a score that is not a number)"
                                 if force else ""))
    path = _champions_file()
    with file_lock(path.with_name(f"{path.name}.lock")):
        current = champion(name)
        if judged is not None and current != judged.champion:
            return Verdict(False, f"{candidate.tag} not promoted: the champion is now {current}, "
                                  f"not the {judged.champion} it was judged against; judge again")
        replaced, refusal = "", None
        if current is not None and current != candidate.tag:
            incumbent, replaced = _incumbent_score(current, judged)
            if incumbent is not None and score < incumbent + margin:
                refusal = (f"{metric} {score:.4f} vs champion {current} {incumbent:.4f}; needs "
                           f"+{margin:.4f}, lost by {incumbent + margin - score:.4f}")
        if refusal is not None and not force:
            return Verdict(False, f"{candidate.tag} not promoted: {refusal}", beaten=True)
        champions = json.loads(path.read_text()) if path.exists() else {}
        champions[name] = candidate.tag
        write_text(path, json.dumps(champions, indent=2))
    before = "no champion" if current is None else f"champion {current}"
    warning = None if refusal is None else (
        f"forced: {candidate.tag} promoted although the comparison refused it ({refusal})")
    return Verdict(True, f"{candidate.tag} is champion ({metric} {score:.4f}; was {before}"
                         f"{replaced})", warning=warning)


def _incumbent_score(current: str, judged: Judged | None) -> tuple[float | None, str]:
    """The champion's score to beat, and why it has none (it cannot be loaded)."""
    if judged is not None and judged.champion_score is not None:
        return judged.champion_score, ""
    try:
        return load(current).metrics[SCORE], ""
    except (IntegrityError, bentoml.exceptions.NotFound) as exc:
        return None, f"; the champion {current} cannot be loaded ({exc})"

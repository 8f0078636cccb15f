"""Fetch the official MovieLens-100K archive from GroupLens when no local copy is given.

The archive is unpacked into a cache folder and checked against the known md5 of ``u.data``
(6e47046882bad158b0efbb84cd5cb987, the GroupLens release): a mismatch deletes the copy and
fails, so a truncated or altered download never reaches ingest.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from data.schema import IngestError

ARCHIVE_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
U_DATA_MD5 = "6e47046882bad158b0efbb84cd5cb987"


def verify(folder: Path) -> Path:
    """Check ``folder/u.data`` against the release checksum; return the folder."""
    data = Path(folder) / "u.data"
    if not data.exists():
        raise IngestError(data, "file not found in the MovieLens-100K folder")
    digest = hashlib.md5(data.read_bytes(), usedforsecurity=False).hexdigest()
    if digest != U_DATA_MD5:
        raise IngestError(
            data, f"checksum mismatch: md5 {digest}, expected {U_DATA_MD5} (corrupt copy?)"
        )
    return Path(folder)


def download(cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Download, unpack and verify the archive once; later calls reuse the verified copy."""
    folder = Path(cache_dir) / "ml-100k"
    if (folder / "u.data").exists():
        return verify(folder)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    archive = Path(cache_dir) / "ml-100k.zip.part"
    log(f"ingest: downloading {ARCHIVE_URL}")
    with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as response, open(archive, "wb") as f:
        shutil.copyfileobj(response, f)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(cache_dir)
    archive.unlink()
    try:
        return verify(folder)
    except IngestError:
        shutil.rmtree(folder, ignore_errors=True)
        raise

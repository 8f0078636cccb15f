"""Dataset ingest: read MovieLens-100K, SASRec sequences or generic files into canonical parquet."""

from training.data.ingest import IngestResult, ingest
from training.data.schema import IngestError

__all__ = ["IngestError", "IngestResult", "ingest"]

"""The data contracts: the canonical event, item and user tables, their manifest and ids.

``ingest`` validates MovieLens-100K, SASRec sequences or generic files and writes the parquet
tables every later layer reads (features, training, serving); ``read_manifest`` reads back
their counts, flags and fingerprint. ``data.atomic`` holds the crash-safe writes (temporary
name, fsync, rename; a set of files committed together) and the inter-process file lock that
every layer above uses. Nothing here imports another layer of the platform.
"""

from data.ingest import IngestResult, ingest, read_manifest
from data.schema import IngestError

__all__ = ["IngestError", "IngestResult", "ingest", "read_manifest"]

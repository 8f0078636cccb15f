"""Training side of the platform: data ingest (``training.data``), later the interest models."""

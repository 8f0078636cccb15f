"""Training side of the platform: data ingest (``training.data``) and, later, the interest models."""

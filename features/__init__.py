"""Feature pipeline: build Feast source tables from ingested data and drive the feature store."""

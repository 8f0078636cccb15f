"""Interest models: one file per model."""

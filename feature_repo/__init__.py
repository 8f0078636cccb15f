"""The Feast feature repository: definitions, store profiles and the guarded online store."""

# Before Feast: the features package switches off the import-time typeguard instrumentation of
# Feast's definition classes (see features/__init__.py).
import features  # noqa: F401

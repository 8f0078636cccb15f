"""The Feast feature repository: definitions, store profiles and the guarded online store."""

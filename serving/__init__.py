"""Packaging: trained interest models in the BentoML model store, and the standalone Bento."""

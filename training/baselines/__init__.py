"""Baselines trained and scored in the same run as the interest models."""

"""Evaluation: ranking, rating, like-probability and intent metrics, and the report."""

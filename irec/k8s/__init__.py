"""The Helm chart (charts/irec) from Python: render, lint, validate, inspect pod specs."""

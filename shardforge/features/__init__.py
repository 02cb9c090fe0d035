"""Declarative feature columns, mergeable analyzers and pure vectorized transforms."""

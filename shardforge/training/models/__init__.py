"""Small readable models for packed batches and tabular features."""

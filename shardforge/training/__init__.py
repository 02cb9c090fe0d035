"""From shards to PyTorch: ShardDataset, sequence packing, models, trainer, memory planner."""

"""Apache Beam composites: ReadRaw, Analyze, Transform, WriteShards (imported only by the CLI)."""

"""Long-term memory: the one service that owns memories, its embedders, index and pipeline."""

"""segmint benchmark suite."""

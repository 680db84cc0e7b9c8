"""segmint engine."""

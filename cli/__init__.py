"""segmint CLI."""

"""Input scanning and cleaning, and atomic output."""

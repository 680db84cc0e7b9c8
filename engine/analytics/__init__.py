"""Customer analytics on top of the feature table: CLV (BG/NBD + Gamma-Gamma)."""

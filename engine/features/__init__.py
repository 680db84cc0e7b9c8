"""Per-customer features: the table, RFM scores and lifecycle status."""

from segmint.engine.features.table import FeatureTable, compute_features

__all__ = ["FeatureTable", "compute_features"]

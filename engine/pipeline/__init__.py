"""The staged pipeline behind every command (engine.pipeline.commands), and the A/B test commands."""

from segmint.engine.pipeline.abtests import abtest_evaluate, abtest_split
from segmint.engine.pipeline.commands import (RunResult, ValidationReport, assign_customers, compute_clv,
                                              compute_cohorts, compute_feature_table, run, validate)

__all__ = ["RunResult", "ValidationReport", "run", "assign_customers", "compute_feature_table", "compute_clv",
           "compute_cohorts", "validate", "abtest_split", "abtest_evaluate"]

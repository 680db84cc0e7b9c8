"""The HTML report of a run: one self-contained file, the same bytes for the same inputs.

``write_report(run_dir, out_html)`` reads the run directory (profiles, run.json and
aggregates of the assignments, in bounded memory: engine.report.inputs), words each
segment (traits), draws the charts as inline SVG (charts) and lays out the page
(html). Cohort retention needs the transactions, which a run directory does not
keep, so it is drawn from the table ``segmint cohorts`` writes when one is given;
migration from a table comparing two runs.
"""

from segmint.engine.report.html import SECTIONS
from segmint.engine.report.inputs import read_cohorts
from segmint.engine.report.writer import write_report

__all__ = ["write_report", "read_cohorts", "SECTIONS"]

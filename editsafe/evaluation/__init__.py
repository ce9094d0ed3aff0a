"""Stage 4: datasets, stored generation, judges, metrics and reports."""

from editsafe.evaluation.margin import DEFAULT_COMPLIANCES, DEFAULT_REFUSALS, MarginResult, refusal_margin

__all__ = ["DEFAULT_COMPLIANCES", "DEFAULT_REFUSALS", "MarginResult", "refusal_margin"]

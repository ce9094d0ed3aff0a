"""Stage 4: datasets, stored generation, judges, metrics and reports."""

from editsafe.evaluation.datasets import Dataset, Prompt, load_dataset
from editsafe.evaluation.margin import DEFAULT_COMPLIANCES, DEFAULT_REFUSALS, MarginResult, refusal_margin
from editsafe.evaluation.pipeline import evaluate

__all__ = [
    "DEFAULT_COMPLIANCES", "DEFAULT_REFUSALS", "Dataset", "MarginResult", "Prompt", "evaluate", "load_dataset",
    "refusal_margin",
]

"""The three label-free quality scores of a sample: EOE, DSS and IDD (higher is better)."""

from operators.scores.dss import DomainScore, DomainScorer, tokenize
from operators.scores.eoe import EOE_MODES, EoeMode, eoe, eoe_batch, histogram_entropy
from operators.scores.idd import idd_from_sum, loo_idd

__all__ = [
    "EOE_MODES",
    "DomainScore",
    "DomainScorer",
    "EoeMode",
    "eoe",
    "eoe_batch",
    "histogram_entropy",
    "idd_from_sum",
    "loo_idd",
    "tokenize",
]

"""Layer-wise Relevance Propagation for CNNs: ``pl.lrp`` (:mod:`.core`), rules as data (:mod:`.rules`),
composites (:mod:`.composites`) and automatic canonization (:mod:`.canonize`)."""

from .composites import COMPOSITES, Composite
from .core import LRPResult, lrp
from .rules import RULES, Group, Part, Rule, make_rule

__all__ = ["COMPOSITES", "Composite", "Group", "LRPResult", "Part", "RULES", "Rule", "lrp", "make_rule"]

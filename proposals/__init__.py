"""Object proposals (selective search windows) for SPP-net: compute, cache, measure.

- :func:`propose` / :func:`propose_with_config`: windows of one RGB image,
  float32 [N, 4] (x1, y1, x2, y2), 0-based continuous pixels, ranked
  (order documented in ``proposals.search``).
- :func:`compute_split` -> :class:`ProposalStore`: a dataset split's windows,
  computed in parallel into an atomic, resumable, content-keyed disk cache.
- ``proposals.recall``: recall at IoU thresholds, recall vs windows, ABO/MABO;
  ``proposals.report`` writes them as markdown, JSON and PNG.
"""
from .compute import compute_split, summarize_store
from .config import METHODS, ProposalConfig, ProposalError
from .precomputed import load_precomputed, save_precomputed_json, save_precomputed_npz
from .recall import RecallReport, evaluate_proposals
from .search import propose, propose_with_config
from .store import ProposalStore

__all__ = [
    "METHODS", "ProposalConfig", "ProposalError", "ProposalStore", "RecallReport",
    "compute_split", "evaluate_proposals", "load_precomputed", "propose",
    "propose_with_config", "save_precomputed_json", "save_precomputed_npz", "summarize_store",
]

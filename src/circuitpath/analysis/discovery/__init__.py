"""Circuit discovery at every checkpoint, scored against the task's exact ground truth.

graph       the model as nodes, edges and the sites where what flows through them can be replaced
forward     the forward pass over those sites: with gradients, or with sites mean-ablated
methods     attribution patching (optionally integrated gradients), activation patching, ablation
prune       a circuit from the scores: top-n, threshold, or greedy ACDC-style on KL
truth       AUROC and precision@k against the relevant positions, faithfulness curves, Spearman
timeline    every method at every checkpoint of a run, saved to RUN/analysis/discovery/
pruning     the edges each update interval strengthened or weakened, and how many were spurious
"""

from circuitpath.analysis.discovery.graph import ModelGraph
from circuitpath.analysis.discovery.methods import METHODS, Probe, SiteScores, score_sites
from circuitpath.analysis.discovery.prune import DiscoveredCircuit, greedy, prune
from circuitpath.analysis.discovery.pruning import PruningStory, pruning_story
from circuitpath.analysis.discovery.timeline import (
    DiscoveryConfig,
    DiscoveryTimeline,
    discover,
    discovery_dir,
    load_timeline,
    save_timeline,
)
from circuitpath.analysis.discovery.truth import auroc, faithfulness, precision_at_k, spearman

__all__ = [
    "METHODS", "DiscoveredCircuit", "DiscoveryConfig", "DiscoveryTimeline", "ModelGraph", "Probe", "PruningStory",
    "SiteScores", "auroc", "discover", "discovery_dir", "faithfulness", "greedy", "load_timeline", "precision_at_k",
    "prune", "pruning_story", "save_timeline", "score_sites", "spearman",
]

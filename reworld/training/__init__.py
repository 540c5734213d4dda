"""Training: the shared loop, the four stages, checkpoints, sharding, the metric network's trainer, ablations."""
from reworld.training.stages import STAGES, run_stage

__all__ = ["STAGES", "run_stage"]

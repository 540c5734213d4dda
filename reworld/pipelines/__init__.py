"""Inference: a run folder loaded into `WorldActionPipeline` (generate, plan, hidden states, planner features)."""
from reworld.pipelines.world_action import GenerationResult, PlanResult, WorldActionPipeline

__all__ = ["GenerationResult", "PlanResult", "WorldActionPipeline"]

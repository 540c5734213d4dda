from .world_action import GenerationResult, PlanResult, WorldActionPipeline

__all__ = ["GenerationResult", "PlanResult", "WorldActionPipeline"]

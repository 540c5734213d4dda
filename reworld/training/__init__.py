from .stages import STAGES, run_stage

__all__ = ["STAGES", "run_stage"]

"""The sampling loops: the Video DiT's (Euler flow matching with intermediate-supervised guidance) and the
Action DiT's (Euler flow matching of trajectories)."""
from reworld.sampling.euler import (
    SampleResult,
    SamplingStopped,
    StepRecord,
    default_guidance,
    default_motion_guidance,
    sample_future,
)
from reworld.sampling.planner import plan_sample

__all__ = ["SampleResult", "SamplingStopped", "StepRecord", "default_guidance", "default_motion_guidance",
           "plan_sample", "sample_future"]

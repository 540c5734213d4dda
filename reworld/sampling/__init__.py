"""The one sampling loop of the Video DiT (Euler flow matching with intermediate-supervised guidance)."""
from reworld.sampling.euler import SampleResult, SamplingStopped, StepRecord, flow_sigmas, sample_future

__all__ = ["SampleResult", "SamplingStopped", "StepRecord", "flow_sigmas", "sample_future"]

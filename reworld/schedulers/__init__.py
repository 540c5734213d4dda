"""Noise schedules of flow matching: the σ grid of the samplers and the σ density of training."""
from reworld.schedulers.flow_match import dynamic_shift, flow_sigmas, sample_sigmas, shift_sigmas

__all__ = ["dynamic_shift", "flow_sigmas", "sample_sigmas", "shift_sigmas"]

"""The planning problem and its judge: scenes, the PDM scorer, hard-negative trajectories. No torch, no models."""

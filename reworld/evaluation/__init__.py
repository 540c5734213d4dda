"""Metrics and the networks that define them (I3D, ReWorldVideoNet), and `evaluate` over a checkpoint."""

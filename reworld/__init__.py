"""ReWorld: representation learning for autonomous-driving world action models."""
__version__ = "0.1.0"

"""ReWorld: representation learning for autonomous-driving world action models.

Nothing heavy happens at import time; `reworld.WorldActionPipeline` is imported on first use.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "WorldActionPipeline":
        from reworld.pipelines.world_action import WorldActionPipeline

        return WorldActionPipeline
    raise AttributeError(f"module 'reworld' has no attribute {name!r}")

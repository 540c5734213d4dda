"""The embedded synthetic driving world, written as a nuScenes v1.0 root (docs/design.md §5)."""
from reworld.data.synth.params import GENERATOR_VERSION, SynthParams
from reworld.data.synth.world import generate_world, plan_scenes, world_generator

__all__ = ["GENERATOR_VERSION", "SynthParams", "generate_world", "plan_scenes", "world_generator"]

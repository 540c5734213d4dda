"""Reading nuScenes-format roots (real or synthetic) into typed clips, and writing the synthetic world."""

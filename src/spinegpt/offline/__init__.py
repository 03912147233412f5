"""What runs with no hub and no downloads: the tiny random Qwen2.5-VL (``builtin:tiny-qwen2_5_vl``) and the smoke
images it sees. Product features (the smoke curriculum and CI train on them), not test scaffolding."""

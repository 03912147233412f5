"""Test and smoke-run support: a tiny offline Qwen2.5-VL, synthetic smoke data, and CPU-only import fixes.

Nothing here is needed on a GPU cluster with real models and data; all of it is needed to run the real engine
on a laptop or in CI.
"""

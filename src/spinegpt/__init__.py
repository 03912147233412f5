"""SpineGPT training repository: curricula, data mixes and evaluation for a spine-surgery Qwen2.5-VL."""

__version__ = "0.1.0"

"""CPU-only import fixes (``cpu_shims``): what it takes to run the real engine on a machine without CUDA."""

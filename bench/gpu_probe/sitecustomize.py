"""Loaded by every Python process of a `bench/gpu_check.py` run (this folder is put first on PYTHONPATH): a rank that
used CUDA writes its peak allocated and reserved memory into its working directory (the stage folder) at exit."""

import atexit
import json
import os


def _dump() -> None:
    try:
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return
        record = {
            "pid": os.getpid(),
            "rank": os.environ.get("RANK"),
            "allocated": torch.cuda.max_memory_allocated(),
            "reserved": torch.cuda.max_memory_reserved(),
        }
        with open(os.path.join(os.getcwd(), f"memory-probe-{os.getpid()}.json"), "w") as handle:
            json.dump(record, handle)
    except Exception:  # a probe must never change how the measured process ends
        pass


if os.environ.get("SPINEGPT_MEMORY_PROBE"):
    atexit.register(_dump)

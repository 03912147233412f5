"""SpineBench scoring and per-stage evaluation hooks (``spinegpt.eval_hooks``)."""

"""Data sources and mixes for the curriculum stages (``spinegpt.data_mixes``)."""

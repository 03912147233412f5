"""Curriculum schema, planning and the stage runner (``spinegpt.train``)."""

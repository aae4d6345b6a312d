"""The pipeline: a graph of stages, run as one unit (see ``pipeline.py``)."""

from .pipeline import ON_FAILURE, Pipeline, default_pipeline, reset_default_pipeline

__all__ = ["ON_FAILURE", "Pipeline", "default_pipeline", "reset_default_pipeline"]

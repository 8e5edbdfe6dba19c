"""tspo-ray: Ray-distributed TSPO keyframe selection."""
__version__ = "0.1.0"

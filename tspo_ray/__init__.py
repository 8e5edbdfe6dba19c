"""tspo-ray: Ray-distributed TSPO keyframe selection.

`tspo_ray.KeyframeSelector` (tspo_ray.selector) is imported on first use, so `import tspo_ray` stays light.
"""
__version__ = "0.1.0"
__all__ = ["KeyframeSelector"]


def __getattr__(name: str):
    if name == "KeyframeSelector":
        from tspo_ray.selector import KeyframeSelector

        return KeyframeSelector
    raise AttributeError(f"module 'tspo_ray' has no attribute {name!r}")

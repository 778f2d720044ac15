"""trtx: TensorRT networks written by hand, in Python, the tensorrtx way.

Importing trtx is cheap: TensorRT is imported by :mod:`trtx_base.backend` on first use, torch only by the
modules that verify against PyTorch (reference, check).
"""

__version__ = "0.1.0"

"""trtx's plugins, one module each (with its .cu kernels beside it); every module here is a plugin.

``plugins.registry.discover`` imports them all; ``from plugins import nms`` is ``plugins.ops.nms``.
"""

"""trtx plugins: TensorRT IPluginV3 plugins written as one small Python file + a CUDA kernel each.

``plugins.core`` turns a declaration into the TensorRT plugin (docs/plugins.md); ``plugins.kernel`` compiles
CUDA C++ with NVRTC and launches it (usable on its own); ``python -m plugins list|compile`` lists plugins and
compiles every kernel for given architectures. Importing this package imports neither torch nor TensorRT.
"""

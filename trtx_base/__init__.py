"""The base layer of trtx: what every other package may use and nothing below it exists.

``files`` (atomic writes), ``errors`` (the user-error base class), ``dtypes`` (the one dtype table),
``backend`` (the one place that imports TensorRT), ``log`` (TensorRT's logger) and ``cudainfo`` (CUDA driver
facts). The packages stack in one line, each importing only those before it (tests/test_layering.py):
trtx_base < wts < plugins < trtx < netdefs < gen_wts < demo.
"""

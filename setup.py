"""Only the optional C decoder of the .wts fast path; everything else is in setup.cfg.

The extension is optional: without a C compiler the build goes on and wts/text.py uses numpy + binascii."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wts._fasthex", ["wts/_fasthex.c"], optional=True, extra_compile_args=["-O3"])])

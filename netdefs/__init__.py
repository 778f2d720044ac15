"""Netdefs: one file per model family, each a hand-written TensorRT network with the shared CLI."""

"""``python -m trtx export triton|deepstream``: serve a built engine with NVIDIA Triton or DeepStream.

Everything comes from the engine and its ``.json`` metadata (``trtx.build.save_engine`` writes both); the pair is
verified first (size and sha256 recorded in the metadata). The engine is copied as is -- the raw serialized
plan, no header in front of it -- so Triton, DeepStream and ``trtexec`` read it directly. Nothing here imports
torch or TensorRT: exporting works on any machine that has the engine files.

``bundle``      load + verify an engine/metadata pair (:class:`Bundle`)
``triton``      a model repository folder: config.pbtxt + 1/model.plan (or one plan per GPU arch)
``deepstream``  an nvinfer config + labels file for detectors whose outputs are boxes, scores and classes
``cli``         the ``export`` subcommands of ``python -m trtx``
"""

from pathlib import Path

from trtx_base.errors import UserError


class ExportError(UserError, ValueError):
    """An engine cannot be exported as asked; the message names the file or flag and says why."""


def written_by(path: Path, marker: str) -> bool:
    """Whether ``path`` is a file an export wrote (its first line is ``marker``): only those are replaced."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(marker)
    except OSError:
        return False

"""Loading any generator checkpoint: a native folder or a foreign file, plus the native format's API.

The native format (``config.json`` + ``model.safetensors``) is :mod:`dhr.models.native`; foreign
files (rosinality / e4e / pSp ``.pt``, NVIDIA ``.pkl``) are imported by :mod:`dhr.models.convert`,
which builds on it. This module is the front door over both: :func:`load_generator` takes either,
and the native format's functions are re-exported so that ``from dhr.models.checkpoint import
save_pretrained`` keeps working. Layering: ``native`` <- ``convert`` <- ``checkpoint``; neither of
the two imports this module, so there is no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from dhr.models.convert import import_checkpoint
from dhr.models.native import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_state_dict,
    config_from_dict,
    config_to_dict,
    load_config,
    load_pretrained,
    load_state_file,
    model_sha256,  # noqa: F401 - deprecated alias of saved_model_sha256, not in __all__
    register_component,
    registered_components,
    save_pretrained,
    saved_model_sha256,
    sha256_file,
)
from dhr.models.stylegan2 import Generator

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "register_component",
    "registered_components",
    "save_pretrained",
    "load_config",
    "load_pretrained",
    "load_generator",
    "load_state_file",
    "check_state_dict",
    "sha256_file",
    "saved_model_sha256",
    "config_to_dict",
    "config_from_dict",
]


def load_generator(path: str | os.PathLike, *, verify: bool = True) -> Generator:
    """Loads a :class:`~dhr.models.stylegan2.Generator` from a native folder or a foreign file.

    Args:
        path: A native folder, a model folder (``model.json``: its ``generator`` component, e.g. what
            ``dhr convert`` writes), or a rosinality / e4e / pSp ``.pt`` or NVIDIA ``.pkl`` file
            (imported on the fly with :func:`dhr.models.convert.import_checkpoint`, which
            executes nothing from the file).
        verify: For native folders, check the recorded sha256.

    Returns:
        The generator in eval mode, float32, on CPU.

    Raises:
        CheckpointError: If the file is missing, corrupt, unsafe or of another architecture.
    """
    path = Path(path)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "model.json").is_file():
        from dhr.models.zoo import load_model

        return load_model(path).generator  # model.json must name one (load_model checks it)
    if path.is_dir():
        module = load_pretrained(path, expected_class="Generator", verify=verify)
        assert isinstance(module, Generator)
        return module
    return import_checkpoint(path).build_generator()

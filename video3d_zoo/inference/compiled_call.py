"""Calling an AOTInductor library without holding Python's GIL.

torch's runner binding (``torch._C._aoti.AOTIModelContainerRunnerCpu.run``) keeps the GIL for
the whole forward pass.  A decoding thread that needs the GIL between FFmpeg calls then stalls
while the model runs (measured: a Python thread ran at 7 % of its speed during a compiled
resnet3d_50 batch, 95 % during the same batch in eager mode, which releases the GIL), so
decoding and inference could not overlap.  :class:`LibraryRunner` calls the library's C
interface (``AOTInductorModelContainer*``, declared in torch's ``aoti_runtime/interface.h``)
through :mod:`ctypes`, which releases the GIL for the call; tensors cross that interface as
``AtenTensorHandle`` pointers made and taken back by ``torch._C._aoti``.

:func:`load_runner` returns a :class:`LibraryRunner`, or torch's own runner where the library
lacks the C interface this module expects.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import List

import torch

_HANDLE, _SIZE = ctypes.c_void_p, ctypes.c_size_t
_HANDLES = ctypes.POINTER(ctypes.c_void_p)
#: name -> argument types of the C functions used (each returns an int status, 0 = success)
_SIGNATURES = {
    "AOTInductorModelContainerCreateWithDevice": [ctypes.POINTER(_HANDLE), _SIZE, ctypes.c_char_p, ctypes.c_char_p],
    "AOTInductorModelContainerRun": [_HANDLE, _HANDLES, _SIZE, _HANDLES, _SIZE, _HANDLE, _HANDLE],
    "AOTInductorModelContainerGetNumOutputs": [_HANDLE, ctypes.POINTER(_SIZE)],
    "AOTInductorModelContainerDelete": [_HANDLE],
}
_SYMBOLS = tuple(_SIGNATURES)

# Private prototypes of two Python C-API functions (PYFUNCTYPE keeps the GIL, as they need);
# setting argtypes on ctypes.pythonapi itself would change them for every other user.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_new_capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))


class LibraryRunner:
    """``run([tensor, ...]) -> [tensor, ...]`` of one AOTInductor CPU library, the GIL released meanwhile."""

    def __init__(self, so_path: Path) -> None:
        self.path = Path(so_path)
        self._lib = ctypes.CDLL(str(self.path))
        missing = [name for name in _SYMBOLS if not hasattr(self._lib, name)]
        if missing:
            raise OSError(f"{self.path.name} does not export {', '.join(missing)}")
        for name in _SYMBOLS:
            function = getattr(self._lib, name)
            function.argtypes, function.restype = _SIGNATURES[name], ctypes.c_int32
        self._handle = ctypes.c_void_p()
        self._call("AOTInductorModelContainerCreateWithDevice", ctypes.byref(self._handle), ctypes.c_size_t(1),
                   b"cpu", None)
        outputs = ctypes.c_size_t()
        self._call("AOTInductorModelContainerGetNumOutputs", self._handle, ctypes.byref(outputs))
        self.num_outputs = outputs.value

    def _call(self, name: str, *args) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:  # the library has printed the C++ exception's message to stderr
            raise RuntimeError(f"{self.path.name}: {name} failed (status {status}; the library's message "
                               "is on stderr)")

    def run(self, inputs: List[torch.Tensor]) -> List[torch.Tensor]:
        capsules = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors(list(inputs))
        # The library takes ownership of the input handles and hands over the output handles.
        handles = (ctypes.c_void_p * len(capsules))(*[_capsule_pointer(c, None) for c in capsules])
        outputs = (ctypes.c_void_p * self.num_outputs)()
        self._call("AOTInductorModelContainerRun", self._handle, handles, ctypes.c_size_t(len(capsules)), outputs,
                   ctypes.c_size_t(self.num_outputs), None, None)
        owned = [_new_capsule(pointer, None, None) for pointer in outputs]
        return torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(owned)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.AOTInductorModelContainerDelete(handle)
            self._handle = None


def load_runner(so_path: Path):
    """A runner of the library at ``so_path``: GIL-free where possible, torch's binding otherwise."""
    try:
        return LibraryRunner(so_path)
    except (OSError, AttributeError):
        return torch._C._aoti.AOTIModelContainerRunnerCpu(str(so_path), 1)

"""Calling an AOTInductor library without holding Python's GIL.

torch's runner binding (``torch._C._aoti.AOTIModelContainerRunnerCpu.run``) keeps the GIL for
the whole forward pass.  A decoding thread that needs the GIL between FFmpeg calls then stalls
while the model runs (measured: a Python thread ran at 7 % of its speed during a compiled
resnet3d_50 batch, 95 % during the same batch in eager mode, which releases the GIL), so
decoding and inference could not overlap.  :class:`LibraryRunner` calls the library's C
interface (``AOTInductorModelContainer*``, declared in torch's ``aoti_runtime/interface.h``)
through :mod:`ctypes`, which releases the GIL for the call; tensors cross that interface as
``AtenTensorHandle`` pointers made and taken back by ``torch._C._aoti``.

:func:`load_runner` returns a :class:`LibraryRunner` after a trial call (the caller compares it
with the eager model).  That path relies on torch internals, so it is used only with the torch
releases it was written for (:data:`WRITTEN_FOR`) and when the private helpers it calls exist;
otherwise, or when the trial fails in any way, torch's own runner is used with one warning.
"""

from __future__ import annotations

import ctypes
import re
import warnings
from pathlib import Path
from typing import Callable, List, Optional

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
#: the private ``torch._C._aoti`` helpers that turn tensors into ``AtenTensorHandle`` pointers and back
_HELPERS = ("unsafe_alloc_void_ptrs_from_tensors", "alloc_tensors_by_stealing_from_void_ptrs")
#: the torch releases (major, minor) this call path is written for: tested with 2.13; the C functions and
#: helpers above are those of torch 2.6 onwards.  Others get torch's runner.
WRITTEN_FOR = ((2, 6), (2, 13))

# Private prototypes of two Python C-API functions (PYFUNCTYPE keeps the GIL, as they need);
# setting argtypes on ctypes.pythonapi itself would change them for every other user.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_new_capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))


class LibraryRunner:
    """``run([tensor, ...]) -> [tensor, ...]`` of one AOTInductor CPU library, the GIL released meanwhile."""

    def __init__(self, so_path: Path, name: Optional[str] = None) -> None:
        self.path, self.name = Path(so_path), name or Path(so_path).name
        self._lib = ctypes.CDLL(str(self.path))
        missing = [name for name in _SYMBOLS if not hasattr(self._lib, name)]
        if missing:
            raise OSError(f"{self.name} does not export {', '.join(missing)}")
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
            raise RuntimeError(f"{self.name}: {name} failed (status {status}; the library's message "
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


def gil_free_problem() -> Optional[str]:
    """Why :class:`LibraryRunner` cannot be used with this torch, or ``None``."""
    version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    (low, high), shown = WRITTEN_FOR, torch.__version__
    if not low <= version <= high:
        return f"written for torch {low[0]}.{low[1]} to {high[0]}.{high[1]}, this is torch {shown}"
    aoti = getattr(torch._C, "_aoti", None)
    missing = [f"torch._C._aoti.{name}" for name in _HELPERS if not hasattr(aoti, name)]
    return f"torch {shown} has no {', '.join(missing)}" if missing else None


def load_runner(so_path: Path, trial: Optional[Callable] = None, name: Optional[str] = None):
    """A runner of the library at ``so_path`` that passed ``trial(runner)`` (which raises on a wrong result):
    GIL-free where possible, torch's binding otherwise (one warning says why).  Raises what torch's runner
    raised, naming both failures, when neither works."""
    name = name or Path(so_path).name
    problem = gil_free_problem()
    if problem is None:
        try:
            runner = LibraryRunner(so_path, name)
            if trial is not None:
                trial(runner)
            return runner
        except Exception as exc:  # anything, a renamed private helper's AttributeError included
            problem = f"{type(exc).__name__}: {exc}"
    try:
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(so_path), 1)
        if trial is not None:
            trial(runner)
    except Exception as exc:
        raise RuntimeError(f"the GIL-free call failed ({problem}), and torch's runner too "
                           f"({type(exc).__name__}: {exc})") from exc
    warnings.warn(f"{name}: calling the compiled library through torch's runner, which holds the GIL while the "
                  f"model runs (decoding threads wait): the GIL-free call path is unavailable ({problem})",
                  RuntimeWarning, stacklevel=2)
    return runner

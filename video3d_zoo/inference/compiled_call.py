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

Both runners get their weights moved to 64-byte-aligned memory (:func:`aligned_copies`): AOTInductor
copies a CPU library's constants into one ``std::malloc`` block, 16-byte aligned, at 64-byte offsets
within it, and oneDNN reads the pre-packed convolution weights straight from there.  Three times in
four the block starts off a cache line and every weight load straddles two: a compiled bf16
resnet3d_50 ran at 156-165 ms per batch of 8 instead of 94-100 ms (same library, same process; 2-core
Xeon with AMX, torch 2.13).  Outputs are bit-identical either way.
"""

from __future__ import annotations

import ctypes
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

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


class _ConstantEntry(ctypes.Structure):
    """``AOTInductorConstantMapEntry`` (aoti_runtime/interface.h): a constant's name and tensor handle."""
    _fields_ = [("name", ctypes.c_char_p), ("handle", ctypes.c_void_p)]


#: the functions that swap a library's constants for aligned copies (all in torch 2.13's libraries; where one
#: is missing, or the swap is refused, the library runs on its own, possibly misaligned, constants)
_CONSTANT_SIGNATURES = {
    "AOTInductorModelContainerExtractConstantsMapEntries": [_HANDLE, ctypes.POINTER(ctypes.POINTER(_ConstantEntry)),
                                                            ctypes.POINTER(_SIZE), ctypes.c_bool],
    "AOTInductorModelContainerUpdateUserManagedConstantBufferPairs": [_HANDLE, ctypes.POINTER(_ConstantEntry), _SIZE,
                                                                      ctypes.c_bool, ctypes.c_bool],
    "AOTInductorModelContainerGetNumConstants": [_HANDLE, ctypes.POINTER(_SIZE)],
    "AOTInductorModelContainerGetConstantName": [_HANDLE, _SIZE, ctypes.POINTER(ctypes.c_char_p)],
    "AOTInductorModelContainerGetConstantOriginalFQN": [_HANDLE, _SIZE, ctypes.POINTER(ctypes.c_char_p)],
    "AOTInductorModelContainerSwapConstantBuffer": [_HANDLE],
    "AOTInductorModelContainerFreeInactiveConstantBuffer": [_HANDLE],
    "aoti_torch_new_tensor_handle": [_HANDLE, ctypes.POINTER(_HANDLE)],  # libtorch's, found through the library
}
#: where oneDNN wants its operands: one cache line
ALIGNMENT = 64
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
        self._constant_handles: list = []
        #: whether the constants were moved to aligned memory (None: this library cannot swap them)
        self.constants_realigned: Optional[bool] = self._align_constants()

    def _align_constants(self) -> Optional[bool]:
        if not all(hasattr(self._lib, name) for name in _CONSTANT_SIGNATURES):
            return None
        for name, argtypes in _CONSTANT_SIGNATURES.items():
            function = getattr(self._lib, name)
            function.argtypes, function.restype = argtypes, ctypes.c_int32
        name_of = self._constant_names()  # the map says the model's names, the update wants the library's
        copies = aligned_copies({name_of[fqn]: tensor for fqn, tensor in self.constants().items()
                                 if fqn in name_of})
        if copies is None:
            return False
        # The library keeps using these handles and never frees them ("user managed"): they are stolen back
        # into tensors, and freed, only after the container is deleted (__del__).
        handles = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors(list(copies.values()))
        pairs = (_ConstantEntry * len(copies))(*[_ConstantEntry(name, _capsule_pointer(capsule, None))
                                                 for name, capsule in zip(copies, handles)])
        try:  # into the inactive buffer first: a refusal leaves the library running on its own constants
            self._call("AOTInductorModelContainerUpdateUserManagedConstantBufferPairs", self._handle, pairs,
                       ctypes.c_size_t(len(copies)), True, True)
            self._call("AOTInductorModelContainerSwapConstantBuffer", self._handle)
        except RuntimeError:
            torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(handles)  # frees them
            return None
        self._constant_handles = handles
        self._call("AOTInductorModelContainerFreeInactiveConstantBuffer", self._handle)  # the misaligned block
        return True

    def constants(self) -> Dict[str, torch.Tensor]:
        """The library's constants by their names in the model (tensors sharing the library's memory)."""
        entries, count = ctypes.POINTER(_ConstantEntry)(), ctypes.c_size_t()
        self._call("AOTInductorModelContainerExtractConstantsMapEntries", self._handle, ctypes.byref(entries),
                   ctypes.byref(count), False)
        names, borrowed = [], []
        for entry in entries[:count.value]:
            handle = ctypes.c_void_p()  # a second handle on the same tensor, owned by the Python tensor made below
            self._call("aoti_torch_new_tensor_handle", entry.handle, ctypes.byref(handle))
            names.append(entry.name.decode())
            borrowed.append(_new_capsule(handle.value, None, None))
        return dict(zip(names, torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(borrowed)))

    def _constant_names(self) -> Dict[str, bytes]:
        """Each constant's name in the model (``model.layer1.0.conv1.bias``) -> its name in the library."""
        count = ctypes.c_size_t()
        self._call("AOTInductorModelContainerGetNumConstants", self._handle, ctypes.byref(count))
        names = {}
        for index in range(count.value):
            name, fqn = ctypes.c_char_p(), ctypes.c_char_p()
            self._call("AOTInductorModelContainerGetConstantName", self._handle, index, ctypes.byref(name))
            self._call("AOTInductorModelContainerGetConstantOriginalFQN", self._handle, index, ctypes.byref(fqn))
            names[fqn.value.decode()] = name.value
        return names

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
        if getattr(self, "_constant_handles", None):
            torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs(self._constant_handles)  # frees them
            self._constant_handles = []


def aligned_copies(constants: Dict[str, torch.Tensor]) -> Optional[Dict[str, torch.Tensor]]:
    """Copies of ``constants`` in memory from torch's allocator (64-byte aligned), or ``None`` where they
    are aligned already.  Only strided tensors show their address (oneDNN's packed weights do not, and
    share the block of the strided ones): with none of them, copies are made to be sure."""
    strided = [t for t in constants.values() if t.layout == torch.strided and t.numel()]
    if strided and all(t.data_ptr() % ALIGNMENT == 0 for t in strided):
        return None
    return {name: tensor.clone() for name, tensor in constants.items()}


class _AlignedTorchRunner:
    """torch's runner with its constants swapped for aligned copies (kept alive here)."""

    def __init__(self, runner) -> None:
        self._runner, self._copies = runner, None
        by_name = runner.get_constant_names_to_original_fqns()
        current = runner.extract_constants_map(False)
        copies = aligned_copies({name: current[fqn] for name, fqn in by_name.items() if fqn in current})
        if copies is not None:
            runner.update_constant_buffer(copies, True, True, True)  # inactive, full, user-managed
            runner.swap_constant_buffer()
            runner.free_inactive_constant_buffer()
            self._copies = copies
        self.constants_realigned = copies is not None

    def run(self, inputs: List[torch.Tensor]) -> List[torch.Tensor]:
        return self._runner.run(inputs)


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
        try:
            runner = _AlignedTorchRunner(runner)
        except (AttributeError, RuntimeError, TypeError, KeyError):
            pass  # a torch without these methods: its runner as it is, possibly slower, same results
        if trial is not None:
            trial(runner)
    except Exception as exc:
        raise RuntimeError(f"the GIL-free call failed ({problem}), and torch's runner too "
                           f"({type(exc).__name__}: {exc})") from exc
    warnings.warn(f"{name}: calling the compiled library through torch's runner, which holds the GIL while the "
                  f"model runs (decoding threads wait): the GIL-free call path is unavailable ({problem})",
                  RuntimeWarning, stacklevel=2)
    return runner

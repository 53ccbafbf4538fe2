"""What a pickled ``.pth`` would import and allocate, read without unpickling it.

``torch.load`` allocates every tensor storage a pickle declares before it reads the bytes, so a
tiny legacy file declaring a 6 GiB storage allocates 6 GiB before it fails; and a file that is no
pickle at all ends in whatever the unpickler trips over (``KeyError``, ``IndexError``).
:func:`scan_checkpoint` walks the pickle opcodes with :mod:`pickletools` (nothing is imported,
called or allocated beyond the file's own bytes) and returns the globals the file would import
and the storages it declares, so both can be judged before ``torch.load`` runs.

The two layouts ``torch.save`` writes: a zip archive (``*/data.pkl`` + one ``*/data/<key>``
record per storage), and the legacy stream of five pickles (magic number, protocol, system info,
the object, the storage keys) followed by the raw storages.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save file
_MAX_LINE = 64 << 20  # a protocol-0 text argument longer than this is not a checkpoint's
_ZIP_HEAD = b"PK\x03\x04"
# Element sizes of the storage classes torch.save names (``UntypedStorage`` counts bytes).
_ELEMENT_BYTES = {"UntypedStorage": 1, "ByteStorage": 1, "CharStorage": 1, "BoolStorage": 1, "QInt8Storage": 1,
                  "QUInt8Storage": 1, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "ShortStorage": 2,
                  "HalfStorage": 2, "BFloat16Storage": 2, "IntStorage": 4, "FloatStorage": 4, "QInt32Storage": 4,
                  "LongStorage": 8, "DoubleStorage": 8, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_UNKNOWN_ELEMENT_BYTES = 16  # the largest: an unknown storage type is counted at its worst


class NotAPickle(ValueError):
    """The bytes are not a pickle (or end inside one); the message says where."""


class ZipBomb(ValueError):
    """A zip archive whose members would unpack to far more than the archive's size."""


@dataclass
class Global:
    name: str  # "module.qualname"


@dataclass
class PickleScan:
    """What a checkpoint declares: its layout, globals and storages ``key -> (type name, bytes)``."""

    layout: str  # "zip" or "legacy"
    imports: List[str] = field(default_factory=list)
    storages: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    records: Dict[str, int] = field(default_factory=dict)  # zip: storage key -> its record's size in bytes
    payload_bytes: int = 0  # legacy: the bytes after the pickles, where the storages are

    @property
    def declared_bytes(self) -> int:
        return sum(nbytes for _, nbytes in self.storages.values())


class _Bounded(io.RawIOBase):
    """A read-only view that never asks the file for more than it holds (a pickle's declared
    lengths are not trusted: a plain ``read(n)`` allocates ``n`` bytes first)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        super().__init__()
        self.fh, self.size = fh, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.fh.tell()
        return self.fh.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self.fh.readline(_MAX_LINE if limit is None or limit < 0 else min(limit, _MAX_LINE))

    def tell(self) -> int:
        return self.fh.tell()


def scan_checkpoint(path: Path, max_unpacked: int) -> Optional[PickleScan]:
    """The scan of a ``torch.save`` file; ``None`` for the (pre-2017) tar layout, left to torch.

    Raises :class:`NotAPickle` when the file is neither a zip archive nor a pickle stream,
    ``zipfile.BadZipFile`` / ``EOFError`` for a damaged one, and :class:`ZipBomb` when a zip
    archive's members would unpack to more than ``max_unpacked`` bytes (nothing is unpacked).
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
        if head.startswith(_ZIP_HEAD):
            return _scan_zip(path, max_unpacked)
        if len(head) > 262 and head[257:262] == b"ustar":
            return None
        fh.seek(0)
        return _scan_legacy(_Bounded(fh, path.stat().st_size))


def _scan_zip(path: Path, max_unpacked: int) -> PickleScan:
    scan = PickleScan("zip")
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        unpacked = sum(i.file_size for i in infos)
        if unpacked > max_unpacked:
            raise ZipBomb(f"its members would unpack to {unpacked} bytes, more than the {max_unpacked} allowed")
        pickles = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
        if not pickles:
            raise NotAPickle("a zip archive without data.pkl, so not written by torch.save")
        prefix = pickles[0].filename[: -len("data.pkl")]
        scan.records = {i.filename[len(prefix) + len("data/"):]: i.file_size for i in infos
                        if i.filename.startswith(prefix + "data/")}
        with zf.open(pickles[0]) as fh:
            _walk_after_header(_Bounded(fh, pickles[0].file_size), scan, 5)
    return scan


def _scan_legacy(fh: _Bounded) -> PickleScan:
    """The five pickles of the legacy layout; a plain pickle (``pickle.dump``) is scanned alone."""
    scan = PickleScan("legacy")
    magic = _walk(fh, scan, storage_fields=None)
    if magic != LEGACY_MAGIC:
        # A plain pickle (pickle.dump), not torch.save's stream: torch.load cannot read it, but
        # what it would import still tells a code-running file from a merely foreign one.
        scan.layout = "pickle"
        return scan
    for storage_fields in (None, None, 6, None):  # protocol, system info, the object, storage keys
        _walk_after_header(fh, scan, storage_fields)
    scan.payload_bytes = fh.size - fh.tell()
    return scan


def _walk_after_header(fh: BinaryIO, scan: PickleScan, storage_fields: Optional[int]) -> Any:
    """:func:`_walk` in a file that began as torch.save writes: a pickle breaking off is damage, not
    a foreign file."""
    try:
        return _walk(fh, scan, storage_fields)
    except NotAPickle as exc:
        raise EOFError(f"a torch.save file whose pickle breaks off or is damaged {exc}") from None


def _walk(fh: BinaryIO, scan: PickleScan, storage_fields: Optional[int]) -> Any:
    """Follow one pickle's opcodes to its STOP, recording globals and storages; its value if simple."""
    stack: List[Any] = []
    marks: List[int] = []
    memo: Dict[Any, Any] = {}
    pos = fh.tell()
    try:
        for op, arg, pos in pickletools.genops(fh):
            _step(op, arg, stack, marks, memo, scan, storage_fields)
    except KeyError as exc:
        raise NotAPickle(f"at byte {pos}: a reference to memo entry {exc} that was never stored") from None
    except IndexError:
        raise NotAPickle(f"at byte {pos}: an opcode that takes more values than the pickle holds") from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise NotAPickle(f"near byte {pos}: {exc}") from None
    if not stack:
        raise NotAPickle("the data ends before a pickle begins")
    return stack[-1]


_VALUE_OPS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}


def _step(op, arg, stack: list, marks: list, memo: dict, scan: PickleScan, storage_fields: Optional[int]) -> None:
    name = op.name
    if name == "STOP":
        return  # the pickle's value stays on the stack
    if name == "MARK":
        marks.append(len(stack))
    elif name in ("GLOBAL", "INST"):
        scan.imports.append(arg.replace(" ", "."))
        _generic(op, stack, marks)
        stack[-1] = Global(arg.replace(" ", "."))
    elif name == "STACK_GLOBAL":
        qualname, module = stack.pop(), stack.pop()
        found = f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else "<computed>"
        scan.imports.append(found)
        stack.append(Global(found))
    elif name in ("EXT1", "EXT2", "EXT4"):  # a global from copyreg's extension registry
        scan.imports.append(f"<copyreg extension {arg}>")
        stack.append(Global(f"<copyreg extension {arg}>"))
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[arg])
    elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
        start = marks.pop() if name == "TUPLE" else len(stack) - int(name[-1])
        if start < 0:
            raise IndexError("stack underflow")
        items = tuple(stack[start:])
        del stack[start:]
        stack.append(items)
    elif name in ("BINPERSID", "PERSID"):
        pid = stack.pop() if name == "BINPERSID" else arg
        _storage(pid, scan, storage_fields)
        stack.append(None)
    elif name in _VALUE_OPS:
        stack.append(_VALUE_OPS[name])
    elif arg is not None and not op.stack_before and len(op.stack_after) == 1:
        stack.append(arg)  # a literal: int, float, str or bytes
    else:
        _generic(op, stack, marks)


def _generic(op, stack: list, marks: list) -> None:
    """Apply an opcode's stack effect with placeholders (pickletools describes every opcode's)."""
    before = op.stack_before
    if pickletools.markobject in before:
        start = marks.pop() - before.index(pickletools.markobject)
    else:
        start = len(stack) - len(before)
    if start < 0:
        raise IndexError(f"stack underflow at {op.name}")
    del stack[start:]
    stack.extend([None] * len(op.stack_after))


def _storage(pid: Any, scan: PickleScan, storage_fields: Optional[int]) -> None:
    """Record ``("storage", type, key, location, numel[, view])`` persistent ids."""
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
        return
    if storage_fields is None or len(pid) != storage_fields:
        raise ValueError(f"a storage reference with {len(pid)} fields where torch.save writes {storage_fields}")
    kind, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"a malformed storage reference {pid[:5]!r}")
    type_name = kind.name.rsplit(".", 1)[-1] if isinstance(kind, Global) else "?"
    nbytes = numel * _ELEMENT_BYTES.get(type_name, _UNKNOWN_ELEMENT_BYTES)
    scan.storages[key] = (type_name, max(nbytes, scan.storages.get(key, ("", 0))[1]))

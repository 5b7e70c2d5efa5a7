"""A .tflite file's structure, checked in Python before the native interpreter reads it.

TFLite's interpreter trusts the flatbuffer it is given a path to: a truncated copy (`head -c 2000 model.tflite`)
crashed it (a segmentation fault). `read` returns the bytes only when the file identifier is "TFL3", the root
table and the tables and vectors the interpreter reads first (subgraphs, tensors, operators, operator codes,
buffers) lie inside the file, and every buffer's data -- inline, or stored after the flatbuffer at an
offset -- ends inside the file. The interpreter is then built from those bytes (`model_content`), which runs
TFLite's own flatbuffer verifier over the rest of the schema (builtin options); a path would not.
"""

from __future__ import annotations

import os
import struct

from imgclass_cli.errors import ImgclassError

IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer (schema.fbs: file_identifier)
MAX_BYTES = 2**34  # 16 GiB: a model file larger than this is not one imgclass exported
MAX_ITEMS = 10_000_000  # entries of one vector (tensors, buffers, ...): a larger count is a corrupt length
# Field slots (4 + 2 * field index in schema.fbs) of the tables the interpreter reads before anything else.
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 6, 8, 12
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS = 4, 6, 8, 10
TENSOR_SHAPE, TENSOR_BUFFER = 4, 8
OPERATOR_OPCODE_INDEX, OPERATOR_INPUTS, OPERATOR_OUTPUTS = 4, 6, 8
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 4, 6, 8


class _Bad(Exception):
    """The structure is broken at `where`."""


class _Reader:
    """Bounds-checked reads of flatbuffer tables and vectors in `buf`."""

    def __init__(self, buf: bytes):
        self.buf = buf

    def _u(self, fmt: str, at: int) -> int:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.buf):
            raise _Bad(f"offset {at} is past the end of the file")
        return struct.unpack_from(fmt, self.buf, at)[0]

    def table(self, at: int) -> tuple[int, int, int]:
        """(table position, vtable position, vtable size) of the table at `at`, both inside the file."""
        vtable = at - self._u("<i", at)
        vsize = self._u("<H", vtable)
        if vsize < 4 or vsize % 2 or vtable + vsize > len(self.buf):
            raise _Bad(f"table at {at} has a broken vtable")
        tsize = self._u("<H", vtable + 2)
        if at + max(tsize, 4) > len(self.buf):
            raise _Bad(f"table at {at} runs past the end of the file")
        return at, vtable, vsize

    def field(self, table: tuple[int, int, int], slot: int) -> int | None:
        """Position of a field of a table, or None when it is absent (its default)."""
        at, vtable, vsize = table
        if slot >= vsize:
            return None
        rel = self._u("<H", vtable + slot)
        return at + rel if rel else None

    def ref(self, table, slot: int) -> int | None:
        """Position of the object a field's offset points at."""
        pos = self.field(table, slot)
        return None if pos is None else pos + self._u("<I", pos)

    def vector(self, at: int | None, item_size: int) -> tuple[int, int]:
        """(first element position, length) of the vector at `at`, all of it inside the file."""
        if at is None:
            return 0, 0
        n = self._u("<I", at)
        if n > MAX_ITEMS or at + 4 + n * item_size > len(self.buf):
            raise _Bad(f"vector at {at} of {n} entries runs past the end of the file")
        return at + 4, n

    def tables(self, table, slot: int) -> list:
        start, n = self.vector(self.ref(table, slot), 4)
        return [self.table(start + 4 * i + self._u("<I", start + 4 * i)) for i in range(n)]

    def ints(self, table, slot: int, fmt: str = "<i") -> list[int]:
        start, n = self.vector(self.ref(table, slot), struct.calcsize(fmt))
        return [self._u(fmt, start + struct.calcsize(fmt) * i) for i in range(n)]

    def scalar(self, table, slot: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, slot)
        return default if pos is None else self._u(fmt, pos)


def _check(buf: bytes) -> None:
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise _Bad('no "TFL3" file identifier at bytes 4-8')
    r = _Reader(buf)
    model = r.table(r._u("<I", 0))
    buffers = r.tables(model, MODEL_BUFFERS)
    for i, b in enumerate(buffers):
        r.vector(r.ref(b, BUFFER_DATA), 1)
        offset, size = r.scalar(b, BUFFER_OFFSET, "<Q"), r.scalar(b, BUFFER_SIZE, "<Q")
        if offset > 1 and offset + size > len(buf):  # data stored after the flatbuffer (models over 2 GB)
            raise _Bad(f"buffer {i} ({size} bytes at offset {offset}) ends past the end of the file")
    codes = r.tables(model, MODEL_OPERATOR_CODES)
    subgraphs = r.tables(model, MODEL_SUBGRAPHS)
    if not subgraphs:
        raise _Bad("no subgraph")
    for g, sg in enumerate(subgraphs):
        tensors = r.tables(sg, SUBGRAPH_TENSORS)
        for t in tensors:
            r.ints(t, TENSOR_SHAPE)
            if r.scalar(t, TENSOR_BUFFER, "<I") >= max(1, len(buffers)):
                raise _Bad(f"a tensor of subgraph {g} names buffer {r.scalar(t, TENSOR_BUFFER, '<I')} of {len(buffers)}")
        indices = r.ints(sg, SUBGRAPH_INPUTS) + r.ints(sg, SUBGRAPH_OUTPUTS)
        for op in r.tables(sg, SUBGRAPH_OPERATORS):
            if r.scalar(op, OPERATOR_OPCODE_INDEX, "<I") >= len(codes):
                raise _Bad(f"an operator of subgraph {g} names an operator code outside the {len(codes)} listed")
            indices += r.ints(op, OPERATOR_INPUTS) + r.ints(op, OPERATOR_OUTPUTS)
        if any(not -1 <= i < len(tensors) for i in indices):  # -1: an optional input left out
            raise _Bad(f"subgraph {g} names a tensor outside its {len(tensors)} tensors")


def read(path: str) -> bytes:
    """The bytes of a .tflite file that passed the structural check; else exit 2 naming the file and the fault."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise ImgclassError(f"{path}: {size} bytes; larger than any TFLite model imgclass reads "
                                f"({MAX_BYTES // 2**30} GiB)")
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise ImgclassError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        _check(buf)
    except _Bad as e:
        raise ImgclassError(f"{path}: not a complete TFLite model ({e}; truncated or corrupt?); "
                            "copy it again or export it again") from None
    return buf

"""Just enough of the WebAssembly binary format to see what a module declares.

wasmtime reports a module's imports and exports, not the memories and tables it defines
without exporting them: a module can define many memories and export one. The sandbox's
policy counts them all (the import, table and memory sections), so this reads those three
sections and skips every other by its length. Pure: bytes in, a `WasmLayout` out, a
`WasmFormatError` for anything it does not recognise (default deny: wasmtime has already
compiled the module, so an encoding unknown here is a feature the sandbox does not allow).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "WasmFormatError", "WasmLayout", "read_layout"]

_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_IMPORT, _TABLE, _MEMORY = 2, 4, 5
_REF_WITH_HEAP_TYPE = (0x63, 0x64)  # (ref null ht), (ref ht): function-references encoding


class WasmFormatError(ValueError):
    """The bytes are not a core module this reader understands."""


@dataclass(frozen=True)
class Limits:
    """A memory's size in 64 KiB pages, or a table's in elements."""

    minimum: int
    maximum: int | None = None


@dataclass(frozen=True)
class WasmLayout:
    """Every memory and table of a module, imported ones first (their index order)."""

    memories: tuple[Limits, ...] = ()
    tables: tuple[Limits, ...] = ()


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError(f"section ends early at byte {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits:
                raise WasmFormatError(f"integer longer than {bits} bits at byte {self.pos}")
        if result >> bits:
            raise WasmFormatError(f"integer longer than {bits} bits at byte {self.pos}")
        return result

    def sleb33(self) -> None:
        for _ in range(5):
            if not self.byte() & 0x80:
                return
        raise WasmFormatError(f"heap type too long at byte {self.pos}")

    def skip_name(self) -> None:
        n = self.uleb()
        if self.pos + n > self.end:
            raise WasmFormatError(f"name runs past its section at byte {self.pos}")
        self.pos += n

    def value_type(self) -> None:
        if self.byte() in _REF_WITH_HEAP_TYPE:
            self.sleb33()

    def limits(self, what: str) -> Limits:
        flags = self.byte()
        if flags & ~0x07:
            raise WasmFormatError(f"{what} limits flags {flags:#x} are not supported")
        if flags & 0x02:
            raise WasmFormatError(f"shared {what}s are not supported")
        bits = 64 if flags & 0x04 else 32
        minimum = self.uleb(bits)
        maximum = self.uleb(bits) if flags & 0x01 else None
        return Limits(minimum, maximum)

    def table_type(self) -> Limits:
        self.value_type()
        return self.limits("table")


def read_layout(wasm: bytes) -> WasmLayout:
    """The memories and tables `wasm` imports or defines."""
    if wasm[:4] != _MAGIC:
        raise WasmFormatError("not a WebAssembly module (no \\0asm header)")
    if wasm[4:8] != _CORE_VERSION:
        raise WasmFormatError(f"not a core module (version bytes {wasm[4:8].hex()})")
    memories: list[Limits] = []
    tables: list[Limits] = []
    pos = 8
    while pos < len(wasm):
        head = _Reader(wasm, pos, len(wasm))
        section = head.byte()
        size = head.uleb()
        end = head.pos + size
        if end > len(wasm):
            raise WasmFormatError(f"section {section} runs past the end of the module")
        body = _Reader(wasm, head.pos, end)
        if section == _IMPORT:
            for _ in range(body.uleb()):
                body.skip_name()
                body.skip_name()
                kind = body.byte()
                if kind == 0x00:  # function: type index
                    body.uleb()
                elif kind == 0x01:
                    tables.append(body.table_type())
                elif kind == 0x02:
                    memories.append(body.limits("memory"))
                elif kind == 0x03:  # global: value type, mutability
                    body.value_type()
                    body.byte()
                elif kind == 0x04:  # tag: attribute, type index
                    body.byte()
                    body.uleb()
                else:
                    raise WasmFormatError(f"unknown import kind {kind:#x}")
        elif section == _TABLE:
            for _ in range(body.uleb()):
                if body.data[body.pos : body.pos + 1] == b"\x40":
                    raise WasmFormatError("tables with initializer expressions are not supported")
                tables.append(body.table_type())
        elif section == _MEMORY:
            for _ in range(body.uleb()):
                memories.append(body.limits("memory"))
        pos = end
    return WasmLayout(memories=tuple(memories), tables=tuple(tables))

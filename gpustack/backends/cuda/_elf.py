"""What a CUDA cubin (an ELF64 image) declares: its length, and each kernel's parameters.

Two uses: the backend checks that a compiled or cached cubin is whole before it
hands it to the driver (``image_size``); the tests check that every kernel's
parameters, as the compiled image declares them to the driver, have the count
and the sizes our launch plans pass (``kernel_params``). Reads the image only;
no CUDA library is needed.

The parameter records are the ``EIATTR_KPARAM_INFO`` attributes of the
``.nv.info.<kernel>`` sections (what ``cuobjdump -elf`` prints as
"Ordinal", "Offset" and "Size").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_SHT_NOBITS = 8

# .nv.info record formats (first byte of each record) and the attribute we read
_EIFMT_NVAL, _EIFMT_BVAL, _EIFMT_HVAL, _EIFMT_SVAL = 1, 2, 3, 4
_EIATTR_KPARAM_INFO = 0x17


class ElfError(ValueError):
    """Not a whole ELF64 image."""


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    offset: int
    size: int


def _header(image: bytes):
    if len(image) < 64 or image[:4] != ELF_MAGIC or image[4] != _ELFCLASS64:
        raise ElfError("not an ELF64 image")
    phoff, shoff = struct.unpack_from("<QQ", image, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", image, 54)
    return phoff, phentsize, phnum, shoff, shentsize, shnum, shstrndx


def image_size(image: bytes) -> int:
    """The length the ELF64 ``image`` declares: the end of its furthest header table or section.

    A whole image is exactly this long; a cubin that came back one byte short from
    ``cupy_backends.cuda.libs.nvrtc.getCUBIN`` (it drops the last byte as if the image
    were a C string) is one shorter.
    """
    phoff, phentsize, phnum, shoff, shentsize, shnum, _ = _header(image)
    end = max(64, phoff + phentsize * phnum, shoff + shentsize * shnum)
    if shoff + shentsize * shnum <= len(image):
        end = max([end] + [s.offset + s.size for s in _sections(image) if s.type != _SHT_NOBITS])
    return end


def _sections(image: bytes) -> list[_Section]:
    _, _, _, shoff, shentsize, shnum, shstrndx = _header(image)
    if shoff + shentsize * shnum > len(image):
        raise ElfError(f"the section headers end at byte {shoff + shentsize * shnum} of a "
                       f"{len(image)}-byte image")
    raw = []
    for i in range(shnum):
        name, type_, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", image, shoff + i * shentsize)
        raw.append((name, type_, offset, size))
    str_offset = raw[shstrndx][2]

    def name_at(pos):
        end = image.index(b"\0", str_offset + pos)
        return image[str_offset + pos:end].decode()

    return [_Section(name_at(n), t, o, s) for n, t, o, s in raw]


def check_whole(image: bytes) -> None:
    """Raise ``ElfError`` unless ``image`` is exactly as long as it declares."""
    size = image_size(image)
    if size != len(image):
        raise ElfError(f"the image is {len(image)} bytes but declares {size}")


def kernel_params(image: bytes) -> dict[str, list[int]]:
    """``{kernel: [size in bytes of each parameter, in order]}`` for every kernel of the cubin."""
    check_whole(image)
    params: dict[str, list[int]] = {}
    for section in _sections(image):
        if not section.name.startswith(".nv.info."):
            continue
        kernel = section.name[len(".nv.info."):]
        found = {}
        pos, end = section.offset, section.offset + section.size
        while pos < end:
            fmt, attr = image[pos], image[pos + 1]
            if fmt == _EIFMT_SVAL:
                (length,) = struct.unpack_from("<H", image, pos + 2)
                if attr == _EIATTR_KPARAM_INFO:
                    _index, ordinal, offset, bits = struct.unpack_from("<IHHI", image, pos + 4)
                    found[ordinal] = (offset, bits >> 18 & 0x3FFF)
                pos += 4 + length
            elif fmt in (_EIFMT_NVAL, _EIFMT_BVAL, _EIFMT_HVAL):
                pos += 4
            else:
                raise ElfError(f"{section.name}: unknown record format {fmt:#x} at byte {pos}")
        if sorted(found) != list(range(len(found))):
            raise ElfError(f"{kernel}: parameter ordinals {sorted(found)} are not 0..{len(found) - 1}")
        params[kernel] = [found[i][1] for i in range(len(found))]
    return params

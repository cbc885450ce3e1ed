"""FER2013 pixel text (``"70 80 82 ..."``, 2,304 numbers a face) -> uint8 faces.

Why this module exists: every CSV layout of FER2013 stores a face as one field of space-separated
integers, and the full file holds 35,887 of them (83 M numbers). pandas reads the CSV structure
(:mod:`fer_core.data.csv_formats`), but the library ways of turning that column into numbers
(``np.fromstring`` per row, pyarrow's split + cast, a second ``read_csv`` with ``sep=" "``) are
each slower than the whole pandas read, and the load has to stay far ahead of torchvision's
(``bench/load_fer2013.py``). So, written by hand for speed, :func:`parse_pixels` decodes the
digits of many rows at once with numpy, and only *flags* rows it is not sure about (a character
other than digits and spaces, not exactly 2,304 numbers, a number with more than 3 digits or
above 255). :func:`pixel_fault` then re-checks a flagged row in plain Python: it either accepts
it (tabs, leading zeros) or names the exact fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["parse_pixels", "pixel_fault"]

NPIX = 48 * 48
_CHUNK_ROWS = 256      # rows decoded at once: temporaries of a few MB stay in the CPU caches


def parse_pixels(texts: Sequence[str], npix: int = NPIX) -> tuple[np.ndarray, np.ndarray]:
    """Pixel texts (``str``, one per face) -> ``(values (n, npix) uint8, suspect (n,) bool)``.

    Values of suspect rows are meaningless; pass those rows to :func:`pixel_fault`.
    """
    n = len(texts)
    out = np.zeros((n, npix), dtype=np.uint8)
    suspect = np.zeros(n, dtype=bool)
    for i0 in range(0, n, _CHUNK_ROWS):
        i1 = min(n, i0 + _CHUNK_ROWS)
        _decode_rows(texts[i0:i1], npix, out[i0:i1], suspect[i0:i1])
    return out, suspect


def _decode_rows(rows: Sequence[str], npix: int, out: np.ndarray, sus: np.ndarray) -> None:
    """One chunk: the rows as a fixed-width byte array (NUL-padded, so numbers of adjacent rows
    never touch), find where each number ends, read the (up to) 4 bytes ending there with one
    gather through an unaligned uint32 view, and combine their digits."""
    k = len(rows)
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=k)
    width = max(int(lens.max()) + 1, 4)
    try:   # row 0 is all NUL: a guard, so every 4-byte gather starts inside the buffer
        s = np.array(["", *rows], dtype=f"S{width}")
    except UnicodeEncodeError:   # one "?" per other character: the row gets flagged
        s = np.array([b"", *(r.encode("ascii", "replace") for r in rows)], dtype=f"S{width}")
    a = s.view(np.uint8).reshape(k + 1, width)
    isd = (a - np.uint8(48)) < 10
    sp = a == 32
    if np.count_nonzero(isd) + np.count_nonzero(sp) != lens.sum():   # another character
        sus |= (isd.sum(axis=1) + sp.sum(axis=1))[1:] != lens
    flat = isd.reshape(-1)
    endm = np.empty_like(flat)
    np.greater(flat[:-1], flat[1:], out=endm[:-1])   # a digit followed by a non-digit
    endm[-1] = False                                 # (the last byte is padding)
    e3 = np.flatnonzero(endm)
    e3 -= 3                                          # -> where the 4 bytes ending there start
    lo = np.searchsorted(e3, np.arange(1, k + 1) * width - 3)
    good = (np.diff(np.append(lo, len(e3))) == npix) & ~sus
    sus[~good] = True
    if good.all():
        gi, e3 = slice(None), e3.reshape(k, npix)
    else:
        gi = np.flatnonzero(good)
        e3 = e3[lo[gi, None] + np.arange(npix)]
    if not e3.size:
        return
    w = np.ndarray((a.size - 3,), dtype="<u4", buffer=s, strides=(1,))
    # the bytes e-3, e-2, e-1, e of every number as four planes (contiguous: faster arithmetic)
    b = np.ascontiguousarray(np.moveaxis(w[e3].view(np.uint8).reshape(*e3.shape, 4), -1, 0))
    b -= np.uint8(48)                          # digits -> 0..9, anything else -> >= 10
    dig = b < 10
    m1 = dig[2]                                # a 2nd digit from the right
    m2 = m1 & dig[1]                           # a 3rd
    b[2] *= m1
    b[1] *= m2
    v = b[1] * np.uint16(100)
    v += b[2] * np.uint8(10)
    v += b[3]
    bad = (v > 255).any(axis=-1) | (m2 & dig[0]).any(axis=-1)   # > 255, or a 4th digit
    out[gi] = v
    if isinstance(gi, slice):
        sus[bad] = True
    else:
        sus[gi[bad]] = True


def pixel_fault(text: str, npix: int = NPIX) -> tuple[np.ndarray | None, str | None]:
    """The exact check of one row's pixel text -> ``(values, None)`` or ``(None, fault)``."""
    toks = text.split()
    for k, t in enumerate(toks, start=1):
        if not (t.isascii() and t.isdigit()):
            shown = t if len(t) <= 20 else t[:17] + "..."
            if t.startswith("-") and t[1:].isascii() and t[1:].isdigit():
                return None, f"pixel {k} = {shown} is outside 0..255"
            return None, f"pixel {k} is not an integer: {shown!r}"
    if len(toks) != npix:
        return None, f"has {len(toks)} pixel values, expected {npix} (48x48)"
    vals = np.array([int(t) for t in toks], dtype=object)
    big = vals > 255
    if big.any():
        k = int(np.argmax(big))
        return None, f"pixel {k + 1} = {vals[k]} is outside 0..255"
    return vals.astype(np.uint8), None

"""streams/tuning.py: the worker's malloc tuning, checked in a fresh process through glibc's own
accounting (mallinfo2: bytes held in mmapped blocks)."""
from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from streams.tuning import set_mmap_threshold

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import ctypes, sys
from streams.tuning import set_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
print(set_mmap_threshold({kib}))
big = bytearray(8 << 20)
del big                      # glibc's default: freeing an 8 MiB mmapped block raises its threshold to 8 MiB
before = libc.mallinfo2().hblkhd
buf = bytearray(1 << 20)     # 1 MiB: mmapped only while the threshold stays low
print((libc.mallinfo2().hblkhd - before) >= 1 << 20)
"""


def glibc_with_mallinfo2() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")


@pytest.mark.skipif(not glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
@pytest.mark.parametrize("kib, applied", [(128, True), (0, False)])
def test_mmap_threshold_stays_where_it_is_set(kib, applied):
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), kib=kib)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(applied), str(applied)]   # set -> a 1 MiB block is mmapped even after an 8 MiB free


def test_zero_leaves_malloc_alone():
    assert set_mmap_threshold(0) is False

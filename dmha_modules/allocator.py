"""Process-level settings that make CPU runs faster."""

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory():
    """Makes glibc keep freed memory for reuse instead of returning it to the OS.

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps
    it on free, so each forward pass of a large convolutional model page-faults
    all its activations in again: on the paper-size model that is a sixth of
    the CPU time (``bench/speed.py``). Serving them from the heap and
    never trimming it keeps the pages; the process's memory then stays at its
    high-water mark. Called by the command-line entry points, never on import.

    Returns
    -------
    bool
        True if the C library is glibc and took the settings.

    Example
    -------
    >>> keep_freed_memory() in (True, False)
    True
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

"""The buffer a loop's Python-level transports read into.

asyncio's datagram and read-pipe transports ask the kernel for up to
``max_size`` (256 KiB) with ``recvfrom(max_size)`` / ``os.read(fd,
max_size)``, which allocate that much for every read and shrink it to what
arrived. Whenever malloc serves such a block from a fresh mapping (which
depends on what the process allocated before), every read costs an mmap, an
mremap and a munmap, and a UDP echo ran at 40% of its speed. ferroloop's
versions read into this buffer instead and copy out only what arrived.
"""

from __future__ import annotations

import mmap

READ_BUFFER_SIZE = 256 * 1024


def page_aligned_buffer(size):
    """A writable buffer of ``size`` (> 0) bytes starting on a page boundary
    (an anonymous mmap, whose pages are touched only as far as they are
    used).

    Also the sendfile fallbacks' buffer for their file reads: a
    ``bytearray`` of 256 KiB starts 16 bytes into a page whenever malloc
    maps it afresh, and on this project's AMD VM the kernel copies from the
    page cache into such a buffer 4x more slowly than into an aligned one
    (1.2 against 4.4-4.8 GB/s reading a cached file by 256 KiB).
    """
    return memoryview(mmap.mmap(-1, size))


class ReadBufferMixin:
    _read_buffer_view = None

    def _read_buffer(self):
        """This loop's read buffer, made on first use. One per loop rather
        than per process: a loop runs in one thread at a time, and the reads
        release the GIL."""
        view = self._read_buffer_view
        if view is None:
            view = self._read_buffer_view = page_aligned_buffer(READ_BUFFER_SIZE)
        return view

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


class ReadBufferMixin:
    _read_buffer_view = None

    def _read_buffer(self):
        """This loop's read buffer, made on first use. One per loop rather
        than per process: a loop runs in one thread at a time, and the reads
        release the GIL. An anonymous mmap: page-aligned, and only the pages
        reads reach are ever touched."""
        view = self._read_buffer_view
        if view is None:
            view = self._read_buffer_view = memoryview(mmap.mmap(-1, READ_BUFFER_SIZE))
        return view

"""loop.sendfile and loop.sock_sendfile.

The zero-copy path is ``os.sendfile`` driven by writability callbacks; when
the kernel cannot do it for a socket/file pair (not a regular file, a TLS
transport), the file is read in an executor and written in blocks, exactly
the fallback asyncio documents.  Errors, messages and the file position on
return follow asyncio's Unix loop.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import ssl
from asyncio import constants, exceptions, protocols

from ._read_buffer import page_aligned_buffer

# Blocks of the executor-read fallback: asyncio's sizes.
_SOCK_FALLBACK_BLOCK = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
_TRANSPORT_FALLBACK_BLOCK = 16 * 1024



def _check_params(sock, file, offset, count):
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if not sock.type == socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


def _seek_after(file, offset, sent):
    # The caller learns how far the transfer got from the file position.
    if sent > 0 and hasattr(file, "seek"):
        file.seek(offset + sent)


class _OsSendfile:
    """One ``os.sendfile`` transfer, advanced each time the socket is
    writable, ending in ``fut``."""

    def __init__(self, loop, fut, sock, fileno, offset, count, blocksize):
        self.loop = loop
        self.fut = fut
        self.sock = sock
        self.fd = sock.fileno()
        self.fileno = fileno
        self.start = offset
        self.offset = offset
        self.count = count
        self.blocksize = blocksize
        self.sent = 0
        self.waiting = False
        fut.add_done_callback(self._on_done)

    def _on_done(self, fut):
        if self.waiting:
            self.waiting = False
            if self.sock.fileno() != -1:
                self.loop.remove_writer(self.fd)

    def _finish_position(self):
        if self.sent > 0:
            os.lseek(self.fileno, self.offset, os.SEEK_SET)

    def step(self):
        fut = self.fut
        if fut.done():
            self._finish_position()
            return
        if self.count:
            self.blocksize = self.count - self.sent
            if self.blocksize <= 0:
                self._finish_position()
                fut.set_result(self.sent)
                return
        try:
            n = os.sendfile(self.fd, self.fileno, self.offset, self.blocksize)
        except (BlockingIOError, InterruptedError):
            self._wait()
        except OSError as exc:
            if self.waiting and exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                # The peer went away mid-transfer: report it as every POSIX
                # platform does, a ConnectionError.
                lost = ConnectionError("socket is not connected", errno.ENOTCONN)
                lost.__cause__ = exc
                exc = lost
            self._finish_position()
            if self.sent == 0:
                # Typically a file the kernel cannot splice from: the caller
                # may fall back to reading and sending it.
                fut.set_exception(exceptions.SendfileNotAvailableError("os.sendfile call failed"))
            else:
                fut.set_exception(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._finish_position()
            fut.set_exception(exc)
        else:
            if n == 0:  # end of file
                self._finish_position()
                fut.set_result(self.sent)
            else:
                self.offset += n
                self.sent += n
                self._wait()

    def _wait(self):
        if not self.waiting:
            self.waiting = True
            self.loop.add_writer(self.fd, self.step)


class _FallbackProtocol(protocols.Protocol):
    """Stands in for the user's protocol while the fallback writes a file
    through the transport: reading is paused, and writing waits whenever
    the transport asks its protocol to pause."""

    def __init__(self, transport):
        if getattr(transport, "_protocol_paused", None) is None:
            raise TypeError("transport should be _FlowControlMixin instance")
        self._transport = transport
        self._proto = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._resume_writing = transport._protocol_paused
        transport.pause_reading()
        transport.set_protocol(self)
        self._writable = transport._loop.create_future() if self._resume_writing else None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._writable is not None:
            await self._writable

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        if self._writable is not None:
            # The file was not sent in full: that is an error to the caller
            # even when the peer closed cleanly.
            self._writable.set_exception(exc or ConnectionError("Connection is closed by peer"))
        self._proto.connection_lost(exc)

    def pause_writing(self):
        if self._writable is None:
            self._writable = self._transport._loop.create_future()

    def resume_writing(self):
        if self._writable is not None:
            self._writable.set_result(False)
            self._writable = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._proto)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._writable is not None:
            self._writable.cancel()
        if self._resume_writing:
            self._proto.resume_writing()


class SendfileMixin:
    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` over the non-blocking stream socket ``sock``;
        returns the number of bytes sent.  ``os.sendfile`` when possible,
        else (with ``fallback``) reads in an executor and sends."""
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if isinstance(sock, ssl.SSLSocket):
            raise TypeError("Socket cannot be of type SSLSocket")
        _check_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else size
        if not blocksize:
            return 0
        fut = self.create_future()
        _OsSendfile(self, fut, sock, fileno, offset, count, blocksize).step()
        return await fut

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        block = min(count, _SOCK_FALLBACK_BLOCK) if count else _SOCK_FALLBACK_BLOCK
        buf = page_aligned_buffer(block)
        sent = 0
        try:
            while True:
                if count:
                    block = min(count - sent, block)
                    if block <= 0:
                        break
                n = await self.run_in_executor(None, file.readinto, buf[:block])
                if not n:
                    break
                await self.sock_sendall(sock, buf[:n])
                sent += n
            return sent
        finally:
            _seek_after(file, offset, sent)

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` through ``transport``; returns the bytes sent.

        Zero-copy ``os.sendfile`` on plain socket transports; TLS transports
        and files the kernel cannot send use the read-and-write fallback
        (unless ``fallback`` is false).  The file position is left after the
        last byte sent, on success and on error.
        """
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not "
                f"supported for transport {transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transport, file, offset, count):
        # The socket is driven directly meanwhile: the transport stops
        # reading, its queue is drained first, and it lends its fd to the
        # plain fd callbacks until the transfer ends.
        resume_reading = transport.is_reading()
        transport.pause_reading()
        await transport._make_empty_waiter()
        transport._set_fd_owned(False)
        try:
            return await self.sock_sendfile(transport._sock, file, offset, count, fallback=False)
        finally:
            transport._reset_empty_waiter()
            if resume_reading:
                transport.resume_reading()
            if transport._sock is not None:
                # Not if closed meanwhile: the fd number may be reused.
                transport._set_fd_owned(True)

    async def _sendfile_fallback(self, transport, file, offset, count):
        if offset:
            file.seek(offset)
        block = min(count, _TRANSPORT_FALLBACK_BLOCK) if count else _TRANSPORT_FALLBACK_BLOCK
        buf = page_aligned_buffer(block)
        sent = 0
        proto = _FallbackProtocol(transport)
        try:
            while True:
                if count:
                    block = min(count - sent, block)
                    if block <= 0:
                        return sent
                n = await self.run_in_executor(None, file.readinto, buf[:block])
                if not n:
                    return sent
                await proto.drain()
                # write() copies what it cannot send now, so the buffer can
                # be reused for the next block.
                transport.write(buf[:n])
                sent += n
        finally:
            _seek_after(file, offset, sent)
            await proto.restore()

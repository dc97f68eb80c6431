"""A socket.socket subclass that counts calls of its I/O methods.

Libraries' tests pass such sockets with ``sock=`` (websockets'
test_explicit_socket) and expect the transport to call their methods, as
asyncio's does. Tests here use it to check that ferroloop's transports do.
"""

import collections
import socket


class CountingSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = collections.Counter()

    def recv(self, *args):
        self.calls["recv"] += 1
        return super().recv(*args)

    def recv_into(self, *args):
        self.calls["recv_into"] += 1
        return super().recv_into(*args)

    def send(self, *args):
        self.calls["send"] += 1
        return super().send(*args)

    def sendmsg(self, *args):
        self.calls["sendmsg"] += 1
        return super().sendmsg(*args)

    def shutdown(self, how):
        self.calls["shutdown"] += 1
        return super().shutdown(how)

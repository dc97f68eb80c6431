"""Tests that are expected to fail on ferroloop until a feature is delivered.

One group per feature.  While `delivered` is False, a failure of a listed test
is expected, and a pass is an error ("unexpected pass": take the entry out).
When the feature lands, set `delivered = True` (or try it first without editing
this file: `run.py --delivered GROUP`); the group's tests then count like any
other, so each one that still fails shows up as a regression.

`tests` maps test keys (fnmatch patterns allowed) to a one-line reason.
`run = False` skips a group's tests on the candidate instead of running them
(for tests that hang until the feature exists); leave it True when possible,
since unexpected passes can only be seen in tests that run.
"""

GROUPS = {
    "tcp": dict(
        delivered=True,
        feature="TCP transports: create_connection, connect_accepted_socket",
        tests={
            'test_events.EventLoopTestsMixin.test_create_connection':
                'create_connection is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_connection_local_addr*':
                'create_connection(local_addr=) is not implemented yet',
            'test_events.EventLoopTestsMixin.test_connect_accepted_socket':
                'connect_accepted_socket is not implemented yet',
            'test_sock_lowlevel.BaseSockTestsMixin.test_create_connection_sock':
                'create_connection(sock=) is not implemented yet',
        },
    ),
    "servers": dict(
        delivered=True,
        feature="create_server / start_server, Server objects",
        tests={
            'test_events.EventLoopTestsMixin.test_create_server':
                'create_server is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_addr_in_use':
                'create_server is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_dual_stack':
                'create_server is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_reuse_port':
                'create_server(reuse_port=) is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_sock':
                'create_server(sock=) is not implemented yet',
            'test_events.EventLoopTestsMixin.test_server_close':
                'Server.close is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_trsock':
                'create_server is not implemented yet (3.12+ test)',
            'test_events.TestServer.test_get_loop':
                'Server objects are not implemented yet',
        },
    ),
    "unix-sockets": dict(
        delivered=True,
        feature="AF_UNIX transports and servers",
        tests={
            'test_events.EventLoopTestsMixin.test_create_unix_connection':
                'create_unix_connection is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_unix_server':
                'create_unix_server is not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_unix_server_path_socket_error':
                'create_unix_server is not implemented yet',
        },
    ),
    "tls": dict(
        delivered=True,
        feature="ssl= on connections and servers, start_tls",
        tests={
            'test_events.EventLoopTestsMixin.test_create_ssl_connection':
                'TLS transports are not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_ssl_unix_connection':
                'TLS transports are not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_server_ssl*':
                'TLS servers are not implemented yet',
            'test_events.EventLoopTestsMixin.test_create_unix_server_ssl*':
                'TLS servers are not implemented yet',
            'test_events.EventLoopTestsMixin.test_ssl_connect_accepted_socket':
                'TLS transports are not implemented yet',
            'test_events.EventLoopTestsMixin.test_connect_accepted_socket_ssl_timeout_for_plain_socket':
                'TLS handshake timeouts are not implemented yet',
        },
    ),
    "udp": dict(
        delivered=True,
        feature="create_datagram_endpoint, datagram transports",
        tests={
            'test_events.EventLoopTestsMixin.test_datagram_send_to_non_listening_address':
                'create_datagram_endpoint is not implemented yet (3.13+ test)',
            'test_events.EventLoopTestsMixin.test_create_datagram_endpoint*':
                'create_datagram_endpoint is not implemented yet',
            'test_sendfile.SendfileTestsBase.test_sendfile_not_supported':
                'needs a datagram transport (create_datagram_endpoint)',
        },
    ),
    "pipes": dict(
        delivered=True,
        feature="connect_read_pipe / connect_write_pipe, PTYs",
        tests={
            'test_events.EventLoopTestsMixin.test_read_pipe':
                'connect_read_pipe is not implemented yet',
            'test_events.EventLoopTestsMixin.test_write_pipe':
                'connect_write_pipe is not implemented yet',
            'test_events.EventLoopTestsMixin.test_write_pipe_disconnect_on_close':
                'connect_write_pipe is not implemented yet',
            'test_events.EventLoopTestsMixin.test_unclosed_pipe_transport':
                'pipe transports are not implemented yet',
            'test_events.EventLoopTestsMixin.test_read_pty_output':
                'connect_read_pipe on a PTY is not implemented yet',
            'test_events.EventLoopTestsMixin.test_write_pty':
                'connect_write_pipe on a PTY is not implemented yet',
            'test_events.EventLoopTestsMixin.test_bidirectional_pty':
                'pipe transports on a PTY are not implemented yet',
            'test_streams.StreamTests.test_read_all_from_pipe_reader':
                'connect_read_pipe is not implemented yet',
        },
    ),
    "subprocesses": dict(
        delivered=True,
        feature="subprocess_exec / subprocess_shell and child watching",
        tests={
            'test_events.SubprocessTestsMixin.*':
                'subprocess_exec/subprocess_shell are not implemented yet',
            'test_unix_events.TestFork.test_fork_asyncio_subprocess':
                'runs asyncio.create_subprocess_exec in a forked child (3.12+ test)',
        },
    ),
    "signals": dict(
        delivered=True,
        feature="add_signal_handler / remove_signal_handler",
        tests={},
    ),
    "sendfile": dict(
        delivered=True,
        feature="loop.sendfile and sock_sendfile",
        tests={},
    ),
}

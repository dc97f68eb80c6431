"""Tests that are not run on the candidate at all, because they check CPython's
own loop implementation (private attributes, selector machinery, mocks of
BaseEventLoop methods) rather than behaviour a replacement loop must have.

Keys are test keys as printed by run.py ("<module>.<class or mixin>.<test>");
fnmatch patterns are allowed.  Every entry needs a one-line reason.  Something
ferroloop merely does not do *yet* belongs in expected_failures.py instead.
"""

EXCLUSIONS = {
    "test_events.EventLoopTestsMixin.test_internal_fds":
        "asserts the selector loop's self-pipe attributes _internal_fds, _csock, _ssock",
    "test_events.EventLoopTestsMixin.test_timeout_rounding":
        "counts calls by replacing loop._run_once and reports _clock_resolution/_selector",
    "test_events.EventLoopTestsMixin.test_create_server_multiple_hosts_*":
        "mocks asyncio.base_events.socket and loop._start_serving/_stop_serving",
    "test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel*":
        "calls the selector loop's private _sock_sendfile_native_impl directly",
    "test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_blocking_error":
        "calls the selector loop's private _sock_sendfile_native_impl directly",
    "test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_exception":
        "calls the selector loop's private _sock_sendfile_native_impl directly",
    "test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_*":
        "calls the selector loop's private _sock_sendfile_native_impl directly",
    "test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_not_available":
        "removes os.sendfile by patching the module asyncio.unix_events imports",
}

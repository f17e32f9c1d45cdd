"""`rci mcp --http`: what the address option accepts, and what it refuses off loopback."""

import pytest

from flows.mcp_server import UsageError, check_http, parse_address
from tasks.settings import Settings


def test_a_port_alone_means_loopback():
    assert parse_address("8765") == ("127.0.0.1", 8765)
    assert parse_address(":8765") == ("127.0.0.1", 8765)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:8765") == ("::1", 8765)


@pytest.mark.parametrize("address", ["localhost", "host:port", "127.0.0.1:0", "127.0.0.1:70000", ""])
def test_bad_addresses_say_what_is_expected(address):
    with pytest.raises(UsageError, match="--http takes HOST:PORT or PORT"):
        parse_address(address)


def test_off_loopback_needs_a_token_and_allowed_roots(tmp_path):
    check_http(Settings(), "127.0.0.1")  # loopback: nothing needed
    with pytest.raises(UsageError, match="needs RCI_MCP_TOKEN and RCI_ALLOWED_ROOTS"):
        check_http(Settings(), "0.0.0.0")
    with pytest.raises(UsageError, match="needs RCI_ALLOWED_ROOTS"):
        check_http(Settings(mcp_token="t0ken"), "0.0.0.0")
    check_http(Settings(mcp_token="t0ken", allowed_roots=[tmp_path]), "0.0.0.0")

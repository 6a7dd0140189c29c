"""Issue 8.6, the codec server: a capped unauthenticated body, and loopback Host headers only
when it runs without a token (against DNS rebinding). Real command line, real sockets."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starter.codec_server import MAX_LOGIN_BODY_BYTES, is_loopback_host_header
from tests.integration.test_codec_server import (
    KEY_TEXT,
    MARKER,
    TOKEN,
    CodecServerProcess,
    base_env,
    insecure_server,
    payloads_json,
    plain,
)
from tests.support.ports import free_port

MIB = 1024 * 1024
HUGE = 400 * MIB  # the size of the POST that raised the server's memory by 300 MB


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = base_env(
        TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT,
        CODEC_SERVER_TOKEN=TOKEN,
        CODEC_SERVER_PORT=str(port),
    )
    log = tmp_path_factory.mktemp("codec-limits") / "codec.log"
    server = CodecServerProcess(env, [], log).start()
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(url)
        assert server.process is not None
        yield url, server.process.pid
    finally:
        assert server.stop() == 0, server.output()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def complete(response: bytes) -> bool:
    """Headers and the whole Content-Length body are in."""
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def stream_login(url: str, *, declare_length: bool) -> tuple[int, bytes]:
    """POST up to HUGE bytes to /login, 1 MiB at a time, stopping as soon as the server
    answers or drops the connection; returns (bytes sent, what the server said)."""
    host, port = url.removeprefix("http://").split(":")
    framing = f"Content-Length: {HUGE}" if declare_length else "Transfer-Encoding: chunked"
    head = (
        f"POST /login HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
    ).encode()
    chunk = b"token=" + b"a" * (MIB - 6)
    piece = chunk if declare_length else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        try:
            while sent < HUGE:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(piece)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading: what we want
        try:
            while not complete(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return sent, answer


@pytest.mark.parametrize("declare_length", [False, True], ids=["chunked", "content-length"])
def test_a_huge_login_body_is_refused_at_the_cap_without_buffering_it(
    token_server: tuple[str, int], declare_length: bool
) -> None:
    url, pid = token_server
    before = rss_bytes(pid)

    sent, answer = stream_login(url, declare_length=declare_length)

    # Refused after a few MiB at most (kernel socket buffers), never the whole 400 MiB.
    assert sent < 32 * MIB, f"the server read {sent / MIB:.0f} MiB before answering"
    grown = rss_bytes(pid) - before
    assert grown < 32 * MIB, f"the server's memory grew by {grown / MIB:.0f} MiB"
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert f"over {MAX_LOGIN_BODY_BYTES} bytes".encode() in answer
    # Still serving.
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_small_login_body_still_signs_in(token_server: tuple[str, int]) -> None:
    url, _ = token_server
    response = httpx.post(f"{url}/login", data={"token": TOKEN})
    assert response.status_code == 200
    assert "codec_session" in response.headers["set-cookie"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8081", True),
        ("localhost", True),
        ("LocalHost:8081", True),
        ("[::1]", True),
        ("[::1]:8081", True),
        ("evil.example.com", False),
        ("evil.example.com:8081", False),
        ("localhost.evil.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("127.0.0.1:80@evil.example.com", False),
        ("localhost:", False),
        ("[::1]x", False),
        ("", False),
    ],
)
def test_loopback_host_headers(host: str, loopback: bool) -> None:
    assert is_loopback_host_header(host) is loopback


def test_without_a_token_only_loopback_host_headers_are_served(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example.com whose name now resolves to 127.0.0.1 reaches
    the port, but its requests carry Host: evil.example.com."""
    server, port = insecure_server(tmp_path)
    url = f"http://127.0.0.1:{port}"
    body = payloads_json([plain(MARKER)])
    try:
        server.wait_ready(url)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            answer = httpx.post(f"{url}/encode", json=body, headers={"Host": host})
            assert answer.status_code == 200, host
        for host in (f"evil.example.com:{port}", "evil.example.com", f"127.0.0.1.nip.io:{port}"):
            for path in ("/encode", "/decode", "/default/decode"):
                refused = httpx.post(f"{url}{path}", json=body, headers={"Host": host})
                assert refused.status_code == 421, (host, path)
                assert "loopback Host headers" in refused.json()["detail"]
                assert MARKER not in refused.text
    finally:
        assert server.stop() == 0, server.output()


def test_with_a_token_any_host_header_is_served(token_server: tuple[str, int]) -> None:
    """The token is the protection there (compose publishes the server under other names)."""
    url, _ = token_server
    response = httpx.post(
        f"{url}/encode",
        json=payloads_json([plain(MARKER)]),
        headers={"Host": "codec-server:8081", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200

"""serve --tls-cert/--tls-key: HTTPS and WSS with a throwaway CA (trustme); bad options are clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Join, Welcome
from server import cli
from server.config import ConfigError, ServerConfig
from tests.conftest import TEST_TOKEN, scaled, small_show


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


async def test_serve_with_tls_answers_https_and_wss(tmp_path: Path, ca: trustme.CA, capsys: pytest.CaptureFixture[str]) -> None:
    """With a certificate, / is served over HTTPS, a participant joins over WSS, and the printed URLs are https."""
    cert_path, key_path = write_cert(ca, tmp_path)
    port = free_port()
    config = ServerConfig(
        host="127.0.0.1", port=port, data_dir=tmp_path / "var", organizer_token=TEST_TOKEN, tls_cert=cert_path, tls_key=key_path
    )
    ready = asyncio.Event()
    task = asyncio.create_task(cli.serve(config, small_show(tmp_path), ready))
    try:
        await asyncio.wait_for(ready.wait(), scaled(10))
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/", ssl=client_context) as response:
                assert response.status == 200
                assert "<title>Unisono</title>" in await response.text()
                assert "content-security-policy" in response.headers
        async with websockets.connect(f"wss://127.0.0.1:{port}/ws", ssl=client_context, origin=f"https://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
            await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="tls-test")))
            welcome = decode(await asyncio.wait_for(ws.recv(), scaled(5)), SERVER_TO_PARTICIPANT, 2**20)  # type: ignore[arg-type]
            assert isinstance(welcome, Welcome) and welcome.group in ("red", "blue")
        # Plain HTTP on the TLS port gets nothing useful: no page leaks in clear text.
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/") as response:
                    assert response.status != 200
        printed = capsys.readouterr().out
        assert f"participants: https://127.0.0.1:{port}/" in printed
        assert f"organizer:    https://127.0.0.1:{port}/organizer.html?token=" in printed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_an_unreadable_certificate_is_an_option_error(tmp_path: Path, ca: trustme.CA) -> None:
    """A missing file or a key that is not PEM is a ConfigError naming the options, before serving."""
    cert_path, key_path = write_cert(ca, tmp_path)
    with pytest.raises(ConfigError, match="cannot read .*missing.pem"):
        cli.tls_context(ServerConfig(tls_cert=tmp_path / "missing.pem", tls_key=key_path))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM certificate chain"):
        cli.tls_context(ServerConfig(tls_cert=cert_path, tls_key=junk))


def test_the_command_refuses_half_a_tls_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`unisono serve --tls-cert X` without --tls-key exits 2 with a one-line error naming both options."""
    rc = cli.main(["serve", "--data-dir", str(tmp_path), "--port", "0", "--tls-cert", str(tmp_path / "cert.pem")])
    assert rc == 2
    assert "tls_cert, tls_key: give both" in capsys.readouterr().err

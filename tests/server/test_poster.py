"""The join QR code and the poster: the code decodes to the join URL, the poster escapes the show's texts."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import zxingcpp
from aiohttp import ClientSession

from server.hub import ShowSpec
from server.poster import poster_language
from tests.conftest import small_show, start_server


def png_to_gray(png: bytes) -> np.ndarray:
    """A PNG's pixels as a grayscale uint8 array (8-bit grey/RGB/RGBA or 1-bit grey, not interlaced).

    Enough for what the tests decode (segno's PNGs, Chromium's screenshots)
    without an imaging library.
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 6: 4}[colour]
    assert interlace == 0 and (depth == 8 or (depth == 1 and colour == 0)), header
    bits_per_pixel = depth * channels
    stride = (width * bits_per_pixel + 7) // 8
    step = max(1, bits_per_pixel // 8)  # the filters' byte distance to the pixel on the left
    raw = zlib.decompress(idat)
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, up_left = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    data = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, stride)
    if depth == 1:
        return (np.unpackbits(data, axis=1)[:, :width] * 255).astype(np.uint8)
    pixels = data.reshape(height, width, channels)
    return pixels[:, :, :3].mean(axis=2).astype(np.uint8) if channels > 1 else pixels[:, :, 0].copy()


def decode_qr(png: bytes) -> list[str]:
    """The texts of every QR code in a PNG."""
    return [code.text for code in zxingcpp.read_barcodes(png_to_gray(png))]


async def test_join_png_decodes_to_the_join_url(tmp_path: Path) -> None:
    """/join.png, the same code as /join.svg, decodes to this server's address when no public URL is set."""
    runner, server = await start_server(tmp_path, small_show(tmp_path))
    try:
        async with ClientSession() as http:
            async with http.get(server.base_url + "/join.png") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "image/png"
                assert response.headers["Cache-Control"] == "no-cache"
                png = await response.read()
            async with http.get(server.base_url + "/join.svg") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "image/svg+xml"
                assert response.headers["Cache-Control"] == "no-cache"
                svg = await response.text()
        assert decode_qr(png) == [server.base_url + "/"]
        assert "<svg" in svg and "viewBox" in svg
    finally:
        await runner.cleanup()


async def test_join_code_holds_the_public_url(tmp_path: Path) -> None:
    """With public_url configured, the QR code holds it, not the address the request came to."""
    runner, server = await start_server(tmp_path, small_show(tmp_path), public_url="https://show.example/")
    try:
        async with ClientSession() as http:
            async with http.get(server.base_url + "/join.png") as response:
                png = await response.read()
        assert decode_qr(png) == ["https://show.example/"]
    finally:
        await runner.cleanup()


async def test_poster_shows_title_when_where_in_the_reader_language(tmp_path: Path) -> None:
    """/poster has the title, when and where in English or French by Accept-Language, the QR code and the URL."""
    runner, server = await start_server(tmp_path, small_show(tmp_path))
    try:
        async with ClientSession() as http:
            async with http.get(server.base_url + "/poster", headers={"Accept-Language": "en-GB,en;q=0.9"}) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/html")
                english = await response.text()
            async with http.get(server.base_url + "/poster", headers={"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8"}) as response:
                french = await response.text()
        assert "<h1>Test show</h1>" in english and "<h1>Test show</h1>" in french
        assert "<dd>Now</dd>" in english and "<dd>Here</dd>" in english and "Scan, open the page" in english
        assert "<dd>Maintenant</dd>" in french and "<dd>Ici</dd>" in french and "Scannez" in french
        assert '<html lang="fr">' in french
        assert "<svg" in english and "@media print" in english
        assert server.base_url + "/" in english
    finally:
        await runner.cleanup()


async def test_poster_escapes_the_show_texts(tmp_path: Path) -> None:
    """A title or a description holding markup is shown as text, never run."""
    spec = small_show(tmp_path)
    hostile = ShowSpec(
        title='<script>alert("x")</script> & co',
        tracks=spec.tracks,
        duration_ns=spec.duration_ns,
        description={"en": {"when": "<b>soon</b>", "where": "<img src=x onerror=alert(1)>"}},
    )
    runner, server = await start_server(tmp_path, hostile)
    try:
        async with ClientSession() as http:
            async with http.get(server.base_url + "/poster") as response:
                page = await response.text()
        assert "<script>" not in page and "<b>" not in page and "<img" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
        assert "&lt;b&gt;soon&lt;/b&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    finally:
        await runner.cleanup()


def test_poster_language_follows_accept_language() -> None:
    """The first of fr and en by q-value wins; anything else reads English."""
    assert poster_language("") == "en"
    assert poster_language("fr-FR") == "fr"
    assert poster_language("de-DE, fr;q=0.8, en;q=0.5") == "fr"
    assert poster_language("en;q=0.9, fr;q=0.4") == "en"
    assert poster_language("fr;q=0.2, en-US;q=0.7") == "en"
    assert poster_language("fr;q=0") == "en"
    assert poster_language("de, it") == "en"
    assert poster_language("fr;q=bad, en;q=0.1") == "en"

"""The join QR code and the printable poster: how people get onto the show's page.

``GET /join.svg`` and ``GET /join.png`` are a QR code of the join URL (the
console shows the SVG; the PNG is for places that do not show SVG, such as
some chat apps); ``GET /poster`` is an A4 page to print and pin up: the show's
title, when and where (French or English, by Accept-Language), the QR code
and one line of instructions. Every text from the show file is escaped.
"""

from __future__ import annotations

import html
import io

import segno
from aiohttp import web

from server.showfile import language_of

# Medium error correction (15 % of the code may be lost): a poster gets
# creased, rained on and photographed at an angle, and the join URL is short
# enough that the code stays coarse.
QR_ERROR = "m"
# Modules per side of the quiet zone: 4 is what ISO/IEC 18004 asks for.
QR_BORDER = 4
# Pixels per module in the PNG: about 300 px for a short URL, sharp on a screen.
PNG_SCALE = 8
# The QR code changes when the join URL does (public_url, a new address).
QR_CACHE_CONTROL = "no-cache"

TEXTS = {
    "en": {
        "lang": "en",
        "when": "When",
        "where": "Where",
        "instructions": "Scan, open the page, tap to join, keep the phone on.",
        "or": "or open",
    },
    "fr": {
        "lang": "fr",
        "when": "Quand",
        "where": "Où",
        "instructions": "Scannez, ouvrez la page, touchez pour rejoindre, gardez le téléphone allumé.",
        "or": "ou ouvrez",
    },
}

_POSTER_CSS = """
@page { size: A4 portrait; margin: 15mm; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #000; background: #fff; }
main { max-width: 180mm; margin: 0 auto; padding: 10mm 0; text-align: center; }
h1 { font-size: 32pt; line-height: 1.1; margin: 0 0 6mm; overflow-wrap: anywhere; }
dl { font-size: 18pt; margin: 0 0 6mm; }
dl div { margin: 2mm 0; }
dt { display: inline; font-weight: 700; }
dt::after { content: " : "; }
dd { display: inline; margin: 0; }
.qr { display: block; width: 120mm; height: 120mm; margin: 0 auto; }
.qr svg { width: 100%; height: 100%; }
.instructions { font-size: 20pt; font-weight: 700; margin: 6mm 0 3mm; }
.url { font-size: 14pt; overflow-wrap: anywhere; }
@media print { main { padding: 0; } }
"""


def join_url(request: web.Request) -> str:
    """The URL participants open: the configured public URL, else this request's scheme and host."""
    from server.app import HUB

    return request.app[HUB].join_url or f"{request.scheme}://{request.host}/"


def qr_code(url: str) -> segno.QRCode:
    return segno.make(url, error=QR_ERROR, micro=False)


def qr_svg(url: str) -> bytes:
    """A standalone SVG of ``url``'s QR code: black on white, sized by its viewBox."""
    out = io.BytesIO()
    qr_code(url).save(out, kind="svg", border=QR_BORDER, dark="#000", light="#fff", omitsize=True, title=url)
    return out.getvalue()


def qr_png(url: str) -> bytes:
    out = io.BytesIO()
    qr_code(url).save(out, kind="png", border=QR_BORDER, scale=PNG_SCALE, dark="#000", light="#fff")
    return out.getvalue()


def poster_language(accept_language: str) -> str:
    """'fr' or 'en': the first of them in an Accept-Language header, by q-value; 'en' when neither."""
    best_lang, best_q = "en", -1.0
    for part in accept_language.split(",")[:32]:
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.split("-")[0].split("_")[0].lower()
        if primary in ("fr", "en") and q > best_q and q > 0:
            best_lang, best_q = language_of(tag), q
    return best_lang


def poster_html(title: str, about: dict[str, str], url: str, lang: str) -> str:
    """The poster page: every text escaped, the QR code inline."""
    texts = TEXTS[lang]
    facts = "".join(
        f"<div><dt>{html.escape(texts[key])}</dt><dd>{html.escape(about[key])}</dd></div>"
        for key in ("when", "where")
        if about.get(key)
    )
    svg = qr_svg(url).decode("utf-8")
    svg = svg[svg.index("<svg") :]  # drop the XML declaration: the SVG goes inline
    return (
        f'<!doctype html>\n<html lang="{texts["lang"]}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_POSTER_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        + (f"<dl>{facts}</dl>\n" if facts else "")
        + f'<div class="qr" role="img" aria-label="QR code: {html.escape(url)}">{svg}</div>\n'
        f'<p class="instructions">{html.escape(texts["instructions"])}</p>\n'
        f'<p class="url">{html.escape(texts["or"])} <strong>{html.escape(url)}</strong></p>\n'
        "</main>\n</body>\n</html>\n"
    )


async def join_svg(request: web.Request) -> web.Response:
    return web.Response(
        body=qr_svg(join_url(request)), content_type="image/svg+xml", headers={"Cache-Control": QR_CACHE_CONTROL}
    )


async def join_png(request: web.Request) -> web.Response:
    return web.Response(
        body=qr_png(join_url(request)), content_type="image/png", headers={"Cache-Control": QR_CACHE_CONTROL}
    )


async def poster(request: web.Request) -> web.Response:
    from server.app import HUB

    spec = request.app[HUB].show_spec
    lang = poster_language(request.headers.get("Accept-Language", ""))
    about = dict(spec.description.get(lang, {}))
    page = poster_html(spec.title, about, join_url(request), lang)
    return web.Response(
        text=page, content_type="text/html", charset="utf-8",
        headers={"Cache-Control": QR_CACHE_CONTROL, "Content-Language": lang},
    )


def add_routes(app: web.Application) -> None:
    """GET /join.svg, /join.png and /poster."""
    app.router.add_get("/join.svg", join_svg)
    app.router.add_get("/join.png", join_png)
    app.router.add_get("/poster", poster)

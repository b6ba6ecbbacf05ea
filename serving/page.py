"""The web page `s2f serve` shows on its REST port: static files in serving/web/ (index.html, s2f.js,
capture.js, s2f.css; no build step, nothing fetched from the internet) and web/config.json, the
model's name and limits, written from the newest loaded version's assets.extra/MODEL_INFO_FILE.

  GET /                  index.html
  GET /web/NAME          one of the files in serving/web/
  GET /web/config.json   {"model": name, "version": N, "info": {...}}

The page calls the REST predict API on its own origin with TF Serving's request body, so the same
files work in front of TF Serving when a proxy serves them beside /v1/ (BUILD.md).
"""

from __future__ import annotations

import os

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
CONFIG = "config.json"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page's own files only: scripts, styles and requests stay on this origin; faces are canvases.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _name(path: str) -> str | None:
    """The page file a request path names ("/" is index.html), or None for a path outside the page."""
    if path in ("/", "/index.html"):
        return "index.html"
    return path[len("/web/") :] if path.startswith("/web/") else None


def is_page_path(path: str) -> bool:
    return _name(path) is not None


def static_file(path: str) -> tuple[bytes, str] | None:
    """The bytes and content type of a page file for a request path; None for any other path.
    Only names in PAGE_DIR are served: no directories, no '..'."""
    name = _name(path)
    if name not in _FILES:
        return None
    with open(os.path.join(PAGE_DIR, name), "rb") as f:
        return f.read(), _TYPES[os.path.splitext(name)[1]]


def config(model_name: str, version: int | None, info: dict) -> dict:
    """web/config.json: the model's name (and its info; the page reads the clip length and the
    minimum from the model's metadata, as it does in front of TF Serving)."""
    return {"model": model_name, "version": version, "info": dict(info)}


_FILES = frozenset(
    n for n in os.listdir(PAGE_DIR) if os.path.splitext(n)[1] in _TYPES
)  # listed once

"""The dashboard's files: our own (package data beside this package) and the third-party ones from npm.

The third-party files are not in the repository: ``npm ci`` in ``web/`` installs them (pinned by
``web/package-lock.json``; ``scripts/test`` and ``scripts/demo`` do it). Only the files named in
:data:`VENDOR_FILES` are ever served from there, by a fixed name, so no request path reaches the file
system. A missing file is reported by name with the command that installs it, and the dashboard's page
says so instead of failing quietly in the browser.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from bmsgate.errors import BmsgateError

__all__ = ["ASSETS_ENV", "OWN_DIR", "VENDOR_FILES", "AssetError", "Assets", "default_node_modules"]

OWN_DIR: Final = Path(__file__).resolve().parent.parent / "web"
"""Our own HTML, JS and CSS (``bmsgate/fleet/server/web``)."""

VENDOR_FILES: Final[Mapping[str, str]] = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "topojson-client.min.js": "topojson-client/dist/topojson-client.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "countries-110m.json": "world-atlas/countries-110m.json",
}
"""Public name under ``/vendor/`` -> path inside ``node_modules``."""

_OWN_SUFFIXES: Final = frozenset({".html", ".js", ".css", ".svg", ".png", ".ico"})
INSTALL_HINT: Final = "run `npm ci` in the repository's web/ folder (scripts/test and scripts/demo do it)"


class AssetError(BmsgateError):
    """A dashboard file is missing or unreadable."""


ASSETS_ENV: Final = "BMSGATE_WEB_ASSETS"
"""Environment variable naming the ``node_modules`` folder (for an installed, non-editable package)."""


def default_node_modules() -> Path:
    """``$BMSGATE_WEB_ASSETS``, else ``web/node_modules`` of the source tree this package runs from."""
    configured = os.environ.get(ASSETS_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[5] / "web" / "node_modules"


@dataclasses.dataclass(frozen=True, slots=True)
class Asset:
    """One file ready to send."""

    body: bytes
    media_type: str


def _media_type(path: Path) -> str:
    if path.suffix == ".js":
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") or guessed.endswith("json") else guessed


class Assets:
    """Every dashboard file, read once at start (they are small: ~400 KB together)."""

    def __init__(self, node_modules: Path | None = None, own_dir: Path = OWN_DIR) -> None:
        self.node_modules = node_modules or default_node_modules()
        self._own: dict[str, Asset] = {}
        self._vendor: dict[str, Asset] = {}
        self.missing: list[str] = []
        """Vendor files that could not be read (the dashboard shows an error page while any is missing)."""
        for path in sorted(own_dir.iterdir()):
            if path.suffix in _OWN_SUFFIXES and path.is_file():
                self._own[path.name] = Asset(path.read_bytes(), _media_type(path))
        for name, relative in VENDOR_FILES.items():
            path = self.node_modules / relative
            try:
                self._vendor[name] = Asset(path.read_bytes(), _media_type(path))
            except OSError:
                self.missing.append(str(path))

    def own(self, name: str) -> Asset:
        """One of our files by name (``app.js``).

        Raises:
            AssetError: no such file.
        """
        try:
            return self._own[name]
        except KeyError:
            raise AssetError(f"no dashboard file {name!r}") from None

    def vendor(self, name: str) -> Asset:
        """A third-party file by its public name (see :data:`VENDOR_FILES`).

        Raises:
            AssetError: unknown name, or the file is not installed.
        """
        if name not in VENDOR_FILES:
            raise AssetError(f"no front-end library file {name!r}")
        try:
            return self._vendor[name]
        except KeyError:
            raise AssetError(
                f"front-end library file {VENDOR_FILES[name]} is not installed in {self.node_modules}: {INSTALL_HINT}"
            ) from None

    def missing_page(self) -> str:
        """An HTML page naming the missing files and how to install them."""
        items = "".join(f"<li><code>{_escape(path)}</code></li>" for path in self.missing)
        return (
            "<!doctype html><html lang=en><meta charset=utf-8><title>bmsgate fleet: front-end files missing</title>"
            "<body style='font:15px system-ui;margin:2rem'><h1>The dashboard's front-end files are missing</h1>"
            f"<p>These files were not found:</p><ul>{items}</ul><p>To install them, {_escape(INSTALL_HINT)}, or "
            "point the server at a <code>node_modules</code> folder that has them.</p>"
            "<p>The API under <code>/api/v1</code> works regardless.</p></body></html>"
        )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""The fleet server's HTTPS listener for the TUF repository: ranges, confinement, data only."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bmsgate.fleet.server.api.artifacts import parse_range

from .conftest import Fleet

PACK = bytes(range(256)) * 40  # 10240 bytes


def _get(
    fleet: Fleet, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> http.client.HTTPResponse:
    parts = urlsplit(fleet.base_url)
    context = ssl.create_default_context(cadata=fleet.ca_pem)
    connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _target_path(fleet: Fleet) -> tuple[str, bytes]:
    fleet.publish({"packs/demo.pack": PACK})
    listed = fleet.server.targets()
    assert listed is not None
    return f"/tuf/targets/{listed.targets[0].stored_name}", PACK


def test_whole_file_and_ranges(fleet: Fleet) -> None:
    path, content = _target_path(fleet)
    parts = urlsplit(fleet.base_url)
    context = ssl.create_default_context(cadata=fleet.ca_pem)

    def fetch(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context, timeout=10)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, body

    status, headers, body = fetch({})
    assert (status, body) == (200, content)
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "application/octet-stream"
    status, headers, body = fetch({"Range": "bytes=100-199"})
    assert (status, body, headers["content-range"]) == (206, content[100:200], f"bytes 100-199/{len(content)}")
    status, headers, body = fetch({"Range": "bytes=10000-"})
    assert (status, body) == (206, content[10000:])
    status, headers, body = fetch({"Range": "bytes=-40"})
    assert (status, body) == (206, content[-40:])
    status, headers, body = fetch({"Range": f"bytes={len(content)}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(content)}")
    status, _, body = fetch({"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, content)


def test_metadata_is_served_as_json(fleet: Fleet) -> None:
    fleet.publish({"packs/demo.pack": PACK})
    response = _get(fleet, "/tuf/metadata/timestamp.json")
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    assert _get(fleet, "/tuf/metadata/1.root.json").status == 200
    assert _get(fleet, "/tuf/metadata/1.snapshot.json").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/tuf/metadata/../keys/timestamp.key",
        "/tuf/metadata/%2e%2e/keys/timestamp.key",
        "/tuf/keys/timestamp.key",
        "/tuf/metadata/lock",
        "/tuf/metadata/endpoint.json",
        "/tuf/targets/packs/../../keys/timestamp.key",
        "/tuf/targets/packs/demo.pack",
        "/tuf/metadata/0.root.json",
        "/tuf/",
        "/",
    ],
)
def test_nothing_outside_the_repository_shape_is_served(fleet: Fleet, path: str) -> None:
    fleet.publish({"packs/demo.pack": PACK})
    assert _get(fleet, path).status == 404


def test_a_symbolic_link_out_of_the_repository_is_not_followed(fleet: Fleet, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret")
    link = fleet.server.targets_dir / "packs" / f"{'a' * 64}.leak"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    assert _get(fleet, f"/tuf/targets/packs/{'a' * 64}.leak").status == 404


def test_only_get_and_head(fleet: Fleet) -> None:
    path, content = _target_path(fleet)
    head = _get(fleet, path, method="HEAD")
    assert head.status == 200
    assert head.getheader("content-length") == str(len(content))
    assert _get(fleet, path, method="POST").status == 405
    assert _get(fleet, path, method="PUT").status == 405


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=-100", 10, (0, 9)),
        ("bytes=-0", 10, False),
        ("bytes=10-", 10, False),
        ("bytes=7-3", 10, None),
        ("bytes=-", 10, None),
        ("items=0-1", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("bytes=0-", 0, False),
    ],
)
def test_parse_range(header: str, size: int, expected: object) -> None:
    assert parse_range(header, size) == expected

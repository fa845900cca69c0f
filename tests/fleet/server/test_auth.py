"""API tokens: shown once, stored hashed, roles nest, revocation and file reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmsgate.fleet.server.auth import Role, TokenError, TokenStore


def test_tokens_verify_by_role_and_are_stored_hashed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    viewer = store.create(Role.VIEWER, "customer")
    admin = store.create(Role.ADMIN)
    info = store.verify(viewer)
    assert info is not None
    assert info.role is Role.VIEWER
    assert store.verify(admin) is not None
    assert store.verify("nope") is None
    text = store.path.read_text()
    assert viewer not in text
    assert admin not in text
    assert store.path.stat().st_mode & 0o077 == 0


def test_roles_nest() -> None:
    assert Role.ADMIN.allows(Role.TECHNICIAN)
    assert Role.TECHNICIAN.allows(Role.VIEWER)
    assert not Role.TECHNICIAN.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.TECHNICIAN)


def test_another_process_creating_a_token_is_seen_and_revocation_works(tmp_path: Path) -> None:
    running = TokenStore(tmp_path)
    assert running.verify("x") is None
    token = TokenStore(tmp_path).create(Role.TECHNICIAN)
    info = running.verify(token)
    assert info is not None
    assert TokenStore(tmp_path).revoke(info.token_id)
    assert running.verify(token) is None
    assert not running.revoke("00000000")


def test_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text(json.dumps({"tokens": {"ab": {"role": "god", "created": 1}}}))
    with pytest.raises(TokenError, match="damaged"):
        TokenStore(tmp_path).verify("x")

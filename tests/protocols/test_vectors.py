"""The conformance vectors in spec/vectors/ are the contract: the Python engine and session must match them exactly.

A future runtime in another language runs the same files (format: spec/vectors/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bmsgate.catalog import Kind, default_catalog
from bmsgate.protocols import PollSession, SessionTiming, get_protocol

from .vectorgen import BATTERY_ID, VECTORS, action_to_json, apply_event, scrambled

FILES = sorted(VECTORS.glob("*/*.json"))
SCHEMA = VECTORS.parent / "schema" / "vector.schema.json"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("name", default_catalog().names(Kind.PROTOCOL))
def test_every_builtin_protocol_has_decode_and_session_vectors(name: str) -> None:
    kinds = {_load(path)["kind"] for path in (VECTORS / name).glob("*.json")}
    assert kinds >= {"decode", "session"}, f"{name}: vectors missing under spec/vectors/{name}/"


@pytest.mark.parametrize("name", default_catalog().names(Kind.PROTOCOL))
def test_verified_means_vectors_from_real_frames(name: str) -> None:
    # The definition's claim and the evidence agree both ways: no verified flag without a vector of
    # captured frames, and no such vector left unclaimed.
    real = [path.name for path in sorted((VECTORS / name).glob("decode-*.json")) if _load(path)["real_frames"] is True]
    claim = get_protocol(name).definition.verified
    assert claim.startswith("real frames: ") == bool(real), (name, claim, real)


@pytest.mark.parametrize("alias", sorted(default_catalog().protocol_aliases()))
def test_a_verified_alias_has_vectors_of_its_own_frames(alias: str) -> None:
    # An alias decodes with its protocol, but "verified" means frames of a pack of *this* family decode.
    real = [path.name for path in sorted((VECTORS / alias).glob("decode-*.json")) if _load(path)["real_frames"] is True]
    (claim,) = [entry.verified for entry in get_protocol(alias).definition.aliases if entry.id == alias]
    assert claim.startswith("real frames: ") == bool(real), (alias, claim, real)


def _types(schema: dict[str, Any], definition: str) -> dict[str, set[str]]:
    """Event or action type -> its allowed keys, read from the schema (no validator library in the venv)."""
    return {
        choice["properties"]["type"]["const"]: set(choice["properties"])
        for choice in schema["$defs"][definition]["oneOf"]
    }


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_vector_follows_the_schema(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    vector = _load(path)
    assert vector["format"] == 1
    # The directory names the family; an alias's vectors name the definition that decodes them.
    family = path.parent.name
    assert vector["protocol"] == family or default_catalog().protocol_aliases()[family].name == vector["protocol"]
    assert vector["source"].strip(), "every vector names where its frames came from"
    assert set(schema["required"]) <= set(vector) <= set(schema["properties"])
    assert path.stem.startswith(vector["kind"])
    events, actions = _types(schema, "event"), _types(schema, "action")
    for step in vector.get("steps", []):
        assert set(step["event"]) <= events[step["event"]["type"]]
        for action in step["actions"]:
            assert set(action) <= actions[action["type"]]


@pytest.mark.parametrize("path", [path for path in FILES if path.stem.startswith("decode")], ids=_id)
def test_decode_vector(path: Path) -> None:
    vector = _load(path)
    assert vector["kind"] == "decode"
    protocol = get_protocol(vector["protocol"])
    assembler = protocol.new_assembler()
    # A vector with a device name holds the chunks as on the wire: its wire key (if any) descrambles them.
    name = vector.get("device_name")
    frames = [
        frame for chunk in vector["chunks"] for frame in assembler.feed(scrambled(protocol, name, bytes.fromhex(chunk)))
    ]
    assert [frame.raw.hex().upper() for frame in frames] == vector["frames"]
    snapshot = protocol.decode(
        frames,
        battery_id=vector["battery_id"],
        timestamp=vector["timestamp"],
        variant=protocol.variant_for_name(name),
    )
    assert _json(snapshot.to_dict()) == vector["snapshot"]


@pytest.mark.parametrize("path", [path for path in FILES if path.stem.startswith("session")], ids=_id)
def test_session_transcript(path: Path) -> None:
    vector = _load(path)
    assert vector["kind"] == "session"
    session = PollSession(
        get_protocol(vector["protocol"]),
        battery_id=vector["battery_id"],
        timing=SessionTiming(**vector["timing"]),
        device_name=vector.get("device_name"),
        secret=bytes.fromhex(vector["secret"]) if "secret" in vector else None,
    )
    for number, step in enumerate(vector["steps"]):
        actions = [_json(action_to_json(action)) for action in apply_event(session, step["event"])]
        assert actions == step["actions"], f"step {number}: {step['event']}"
    assert any(
        action["type"] in {"snapshot", "give_up", "reply"} for step in vector["steps"] for action in step["actions"]
    ), "a transcript ends a job"


def test_vectors_use_one_battery_id() -> None:
    assert {_load(path)["battery_id"] for path in FILES} == {BATTERY_ID}

"""Engine 6: a GATT profile's further characteristics in the definition format and in GATT selection.

``also_notify`` and ``connect_writes`` (constructs ``gatt.also_notify``, ``gatt.connect_writes``): what the
loader accepts and refuses, what ``requires`` must say, the canonical form, the pure choice of
characteristics (`select_characteristics`), and a fuzz of the profile section where only `DefinitionError`
escapes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.errors import DefinitionError
from bmsgate.protocols import get_protocol
from bmsgate.protocols.constructs import CONSTRUCTS, ENGINE_VERSION, constructs_used
from bmsgate.protocols.definition import (
    GattProfile,
    ProtocolDefinition,
    definition_from_canonical,
    definition_from_mapping,
    normalize_uuid,
)
from bmsgate.transports.discovery import GattCharacteristic, GattService, GattTree, select_characteristics

SUPERB_V2 = get_protocol("superb-v2").definition
JBD = get_protocol("jbd").definition
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _with_profiles(definition: ProtocolDefinition, profiles: Any, *, requires: bool = False) -> dict[str, Any]:
    data = definition.model_dump(mode="json", exclude={"source"}, exclude_defaults=True)
    data["gatt"]["profiles"] = profiles
    if not requires:
        data.pop("requires", None)
    return data


def _uuid(short: str) -> str:
    return normalize_uuid(short)


def _char(short: str, handle: int, *properties: str) -> GattCharacteristic:
    return GattCharacteristic(_uuid(short), handle, tuple(properties))


# -- the format -------------------------------------------------------------------------------------------


def test_the_constructs_are_in_the_engine_table_at_level_6() -> None:
    assert {"gatt.also_notify", "gatt.connect_writes"} <= set(CONSTRUCTS)
    assert ENGINE_VERSION >= 6
    assert "gatt.also_notify" in constructs_used(SUPERB_V2)
    assert "gatt.connect_writes" in constructs_used(JBD)
    assert "gatt.connect_writes" not in constructs_used(SUPERB_V2)


def test_requires_must_list_them() -> None:
    data = SUPERB_V2.model_dump(mode="json", exclude={"source"}, exclude_defaults=True)
    data["requires"] = [name for name in data["requires"] if name != "gatt.also_notify"]
    with pytest.raises(DefinitionError, match=r"uses gatt\.also_notify but 'requires' does not list it"):
        definition_from_mapping(data)


def test_an_older_engine_refuses_by_the_construct_name() -> None:
    data = SUPERB_V2.model_dump(mode="json", exclude={"source"}, exclude_defaults=True)
    data["requires"] = [*data["requires"], "gatt.read_blocks"]
    with pytest.raises(DefinitionError, match=r"needs engine construct gatt\.read_blocks"):
        definition_from_mapping(data)


def test_the_canonical_form_keeps_them_and_loads_back() -> None:
    for definition in (SUPERB_V2, JBD):
        again = definition_from_canonical(definition.canonical_json())
        assert again.gatt == definition.gatt
        assert again.canonical_json() == definition.canonical_json()
    ir = JBD.ir()
    dyness = ir["gatt"]["profiles"][-1]
    assert dyness["connect_writes"] == [{"characteristic": _uuid("fed5"), "frame": "aa5501000056"}]


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ({"also_notify": ["cf9ccdfa-eee9-43ce-87a5-82b54af5324e"]}, "repeats the notify characteristic"),
        ({"also_notify": ["2a19", "2a19"]}, "repeats the notify characteristic or another entry"),
        ({"also_notify": [f"{n:04x}" for n in range(9)]}, "at most 8"),
        ({"also_notify": ["not a uuid"]}, "UUID"),
        ({"connect_writes": [{"characteristic": "fed5", "frame": ""}]}, "at least 1"),
        ({"connect_writes": [{"characteristic": "fed5", "frame": "00" * 513}]}, "at most 512"),
        ({"connect_writes": [{"characteristic": "fed5", "frame": "XYZ"}]}, "hex"),
        ({"connect_writes": [{"characteristic": "fed5"}]}, "frame"),
        ({"connect_writes": [{"characteristic": "fed5", "frame": "01", "reply": 1}]}, "reply"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(profile: dict[str, Any], reason: str) -> None:
    base = SUPERB_V2.gatt.profiles[0].model_dump(mode="json", exclude_defaults=True) if SUPERB_V2.gatt else {}
    base.pop("also_notify", None)
    with pytest.raises(DefinitionError, match=r"gatt\.profiles") as caught:
        definition_from_mapping(_with_profiles(SUPERB_V2, [{**base, **profile}]))
    assert reason.lower() in str(caught.value).lower()


def test_further_notifications_need_whole_frames_per_notification() -> None:
    data = JBD.model_dump(mode="json", exclude={"source"}, exclude_defaults=True)
    data.pop("requires")
    data["gatt"]["profiles"] = [{"service": "ff00", "notify": "ff01", "write": "ff02", "also_notify": ["ff03"]}]
    with pytest.raises(DefinitionError, match=r"needs framing\.frame_per_chunk"):
        definition_from_mapping(data)


def test_extra_characteristics_lists_what_the_board_must_offer() -> None:
    profile = GattProfile(
        service="fe00",
        notify="fe02",
        write="fe01",
        also_notify=["fe03"],
        connect_writes=[{"characteristic": "fed5", "frame": "01"}, {"characteristic": "fed5", "frame": "02"}],  # type: ignore[list-item]
    )
    assert profile.extra_characteristics == {_uuid("fe03"), _uuid("fed5")}


@FUZZ
@given(
    profile=st.dictionaries(
        st.sampled_from(["service", "notify", "write", "also_notify", "connect_writes", "other"]),
        st.none()
        | st.text(max_size=40)
        | st.integers()
        | st.lists(
            st.text(max_size=40)
            | st.dictionaries(
                st.sampled_from(["characteristic", "frame", "x"]), st.text(max_size=60) | st.integers(), max_size=3
            ),
            max_size=10,
        ),
        max_size=6,
    )
)
def test_fuzz_profiles_only_definition_errors_escape(profile: dict[str, Any]) -> None:
    try:
        definition_from_mapping(_with_profiles(SUPERB_V2, [profile]))
    except DefinitionError:
        pass


# -- choosing characteristics ------------------------------------------------------------------------------


DYNESS_PROFILE = JBD.gatt.profiles[-1] if JBD.gatt else None


def _dyness_tree(*, unlock: bool = True, unlock_elsewhere: bool = False) -> GattTree:
    chars = [_char("fe01", 10, "write-without-response", "write"), _char("fe02", 12, "notify")]
    elsewhere: list[GattCharacteristic] = []
    if unlock:
        (elsewhere if unlock_elsewhere else chars).append(_char("fed5", 15, "write-without-response"))
    services = [GattService(_uuid("fe00"), 8, tuple(chars))]
    if elsewhere:
        services.append(GattService(_uuid("fed0"), 20, tuple(elsewhere)))
    return GattTree(tuple(services))


def test_the_dyness_profile_is_chosen_with_its_unlock_characteristic() -> None:
    assert JBD.gatt is not None
    selection = select_characteristics(_dyness_tree(), JBD.gatt.profiles)
    assert selection is not None
    assert selection.profile == DYNESS_PROFILE
    assert [(c.handle, frame.hex()) for c, frame in selection.connect_writes] == [(15, "aa5501000056")]


def test_the_unlock_characteristic_may_sit_in_another_service() -> None:
    assert JBD.gatt is not None
    selection = select_characteristics(_dyness_tree(unlock_elsewhere=True), JBD.gatt.profiles)
    assert selection is not None
    assert [c.handle for c, _frame in selection.connect_writes] == [15]


def test_without_the_unlock_characteristic_no_profile_fits() -> None:
    assert JBD.gatt is not None
    assert select_characteristics(_dyness_tree(unlock=False), JBD.gatt.profiles) is None


def test_a_plain_jbd_board_gets_no_further_characteristics() -> None:
    assert JBD.gatt is not None
    board = GattTree((GattService(_uuid("ff00"), 8, (_char("ff01", 10, "notify"), _char("ff02", 12, "write"))),))
    selection = select_characteristics(board, JBD.gatt.profiles)
    assert selection is not None
    assert selection.connect_writes == ()
    assert selection.also_notify == ()


def test_also_notify_needs_a_notifying_characteristic() -> None:
    assert SUPERB_V2.gatt is not None
    main = "cf9ccdfa-eee9-43ce-87a5-82b54af5324e"
    second = "e0fef452-9d2b-4005-a1e3-69fe1102b436"
    service = _uuid("cf9ccdf7-eee9-43ce-87a5-82b54af5324e")
    shared = GattCharacteristic(_uuid(main), 10, ("write", "notify"))
    for properties, chosen in ((("read",), False), (("read", "notify"), True), (("indicate",), True)):
        board = GattTree((GattService(service, 8, (shared, GattCharacteristic(_uuid(second), 14, properties))),))
        selection = select_characteristics(board, SUPERB_V2.gatt.profiles)
        assert (selection is not None) is chosen, properties
        if selection is not None:
            assert [c.handle for c in selection.also_notify] == [14]

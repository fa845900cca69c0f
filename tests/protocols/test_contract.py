"""The contract every protocol definition keeps, checked for every registered (built-in) definition.

1. Advertisement matchers compile and match the names/services/ids they document.
2. Literal request frames and rendered commands carry valid checksums.
3. Its simulator's replies, fed through the assembler in notification-sized chunks, decode back to the
   simulated pack's values within the resolution of each field's scale.
4. Fuzzing: random bytes and mutated valid frames through the assembler and decode raise nothing but
   `bmsgate.errors` types.
5. A user-file copy (``load_protocol_file``) behaves exactly like the built-in.
6. The simulator speaks it to the real client, and ``bmsgate decode`` decodes its frames.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmsgate.app.cli.main import main
from bmsgate.catalog import Kind, default_catalog
from bmsgate.errors import BmsgateError, DecodeError
from bmsgate.model import BatterySnapshot
from bmsgate.protocols import CompiledProtocol, decode, get_protocol, load_protocol_file
from bmsgate.protocols.checksums import CHECKSUMS
from bmsgate.protocols.framing import Frame
from bmsgate.runtime.client import BatteryClient, ClientOptions
from bmsgate.runtime.simulation import SIMULATED_SECRET, PackConfig, PackModel, VirtualBms
from bmsgate.transports.simulator import SimulatorTransport

NAMES = tuple(default_catalog().names(Kind.PROTOCOL))
FUZZ = settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_the_issue_5_protocols_are_registered() -> None:
    assert {"jbd", "jk", "daly", "daly-a5", "litime", "renogy", "tianpower"} <= set(NAMES)


def _poll(protocol: CompiledProtocol, *, cells: int = 16, ntc: int = 3, seed: int = 1) -> tuple[PackModel, list[bytes]]:
    """One full poll answered by the virtual BMS: (pack, raw replies as the module sends them)."""
    pack = PackModel(PackConfig(cells=cells, ntc_count=ntc, seed=seed, current_amplitude=20.0))
    pack.advance(700.0)
    bms = VirtualBms(protocol, pack)
    replies: list[bytes] = []
    # The requests a device of the simulator's name is sent (Offgridtec's type A or B registers).
    for request in protocol.requests_for(bms.device_name):
        if request.frame:
            replies += bms.handle_write(protocol.wire(request.frame))
        elif not request.follows:  # a BMS that is never asked: what it sends on its own for this reply
            replies += bms.replies_for(request.reply or 0)
        # (a `follows` reply came with the request before it)
    return pack, replies


def _assemble(protocol: CompiledProtocol, replies: Iterable[bytes]) -> list[Frame]:
    gatt = protocol.definition.gatt
    size = gatt.notification_size if gatt else 64
    assembler = protocol.new_assembler()
    frames: list[Frame] = []
    for reply in replies:
        for start in range(0, len(reply), size):
            frames += assembler.feed(reply[start : start + size])
    return frames


# -- 1. matchers ---------------------------------------------------------------------------------------


def _example_name(glob: str) -> str:
    return re.sub(r"\[([^\]])[^\]]*\]", r"\1", glob).replace("*", "X1").replace("?", "7")


@pytest.mark.parametrize("name", NAMES)
def test_matchers_match_what_they_document(name: str) -> None:
    definition = get_protocol(name).definition
    assert definition.match, f"{name} has no advertisement matcher"
    for matcher in definition.match:
        advertisement: dict[str, Any] = {
            "name": _example_name(matcher.local_name) if matcher.local_name else None,
            "address": f"{matcher.address_prefix}:00:00:00:00:00"[:17] if matcher.address_prefix else None,
            "service_uuids": [matcher.service_uuid] if matcher.service_uuid else [],
            "manufacturer_ids": [matcher.manufacturer_id] if matcher.manufacturer_id is not None else [],
            "service_data_uuids": [matcher.service_data_uuid] if matcher.service_data_uuid else [],
        }
        assert matcher.matches(**advertisement), matcher
        assert definition.matches_advertisement(**advertisement)
    assert not definition.matches_advertisement(
        name="Kitchen speaker", address="00:11:22:33:44:55", service_uuids=["180f"], manufacturer_ids=[0x004C]
    )


# -- 2. request checksums --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_request_frames_and_commands_have_valid_checksums(name: str) -> None:
    protocol = get_protocol(name)
    for request in protocol.requests:
        # An empty frame listens (nothing is sent, so nothing carries a checksum).
        assert not request.frame or protocol.request_checksum_ok(request.frame), request.name
    for command in protocol.definition.commands:
        for charge in (True, False, None):
            for discharge in (True, False, None):
                frame = protocol.build_command(command, charge=charge, discharge=discharge)
                assert protocol.request_checksum_ok(frame), command


# -- 3. simulator round trip -------------------------------------------------------------------------------


def _resolution(protocol: CompiledProtocol, target: str) -> float:
    scales = [
        abs(field.scale)
        for reply in protocol.definition.replies.values()
        for field in reply.fields
        if field.target == target
    ]
    return max(scales, default=1.0) / 2 + 1e-6


def _cell_slots(protocol: CompiledProtocol) -> int | None:
    """How many cell voltages the definition's frames carry at most (None: as many as the pack has).

    A frame with a fixed number of cell slots (Saftkiste: 4) reports the first ones of a larger simulated
    pack; a protocol that reads no cell voltages (a shunt, LiPower) reports none.
    """
    # A layout the simulated device's name chooses (Offgridtec type A: no cells) is the one simulated.
    layout = protocol.variant_for_name(protocol.definition.simulator.device_name)
    fields = [
        (reply, field)
        for reply in protocol.definition.replies.values()
        for field in reply.fields
        if field.target == "cell_voltages" and (layout is None or field.variants is None or layout in field.variants)
    ]
    if not fields:
        return 0
    if any(not isinstance(field.count, int) or reply.index is not None or field.variants for reply, field in fields):
        return None
    return sum(field.count for _, field in fields if isinstance(field.count, int))


def _cells_reported(protocol: CompiledProtocol, cells: int) -> int:
    slots = _cell_slots(protocol)
    return cells if slots is None else min(cells, slots)


def _expected(pack: PackModel, protocol: CompiledProtocol) -> dict[str, Any]:
    state = pack.state()
    state.update(protocol.definition.simulator.state)
    return state


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("cells", "ntc"), [(16, 3), (4, 1), (8, 2)])
def test_simulator_output_round_trips(name: str, cells: int, ntc: int) -> None:
    protocol = get_protocol(name)
    pack, replies = _poll(protocol, cells=cells, ntc=ntc)
    snapshot = decode(protocol, _assemble(protocol, replies), battery_id="sim", timestamp=0.0)
    state = _expected(pack, protocol)
    reported = protocol.definition.reported_targets
    for target in ("voltage", "current", "soc", "soh", "remaining_capacity", "full_capacity", "mosfet_temperature"):
        if target in reported:
            value = getattr(snapshot, target)
            assert value is not None, target
            assert value == pytest.approx(state[target], abs=_resolution(protocol, target)), target
    if "cycles" in reported:
        assert snapshot.cycles == state["cycles"]
    if "cell_voltages" in reported:
        resolution = _resolution(protocol, "cell_voltages")
        fitted = state["cell_voltages"][: _cells_reported(protocol, cells)]
        assert snapshot.cell_voltages == pytest.approx(fitted, abs=resolution)
    if "temperatures" in reported:
        # Protocols with fixed sensor slots (JK's T1/T2) report unfitted sensors too, and one with fewer slots
        # than the pack has sensors (E&J: one) the first ones: compare the sensors both have.
        both = min(len(snapshot.temperatures), len(state["temperatures"]))
        assert both >= 1
        fitted = snapshot.temperatures[:both]
        assert fitted == pytest.approx(state["temperatures"][:both], abs=_resolution(protocol, "temperatures"))
    for target in ("charge_enabled", "discharge_enabled"):
        if target in reported:
            assert getattr(snapshot, target) is state[target], target
    for value in snapshot.to_dict().values():
        if isinstance(value, float):
            assert math.isfinite(value)


# -- 4. fuzzing ---------------------------------------------------------------------------------------------


def _feed_and_decode(protocol: CompiledProtocol, chunks: Iterable[bytes]) -> None:
    assembler = protocol.new_assembler()
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            frames += assembler.feed(chunk)
            assert assembler.buffered <= 4 * protocol.definition.framing.max_length
        if frames:
            decode(protocol, frames, timestamp=0.0)
    except BmsgateError:
        pass
    for frame in frames:
        try:
            decode(protocol, [frame.raw], timestamp=0.0)
        except BmsgateError:
            pass


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.lists(st.binary(max_size=400), max_size=6))
def test_fuzz_random_bytes(name: str, data: list[bytes]) -> None:
    protocol = get_protocol(name)
    _feed_and_decode(protocol, data)
    try:
        decode(protocol, data, timestamp=0.0)
    except BmsgateError:
        pass


_VALID: dict[str, list[bytes]] = {}


def _valid_replies(name: str) -> list[bytes]:
    if name not in _VALID:
        _VALID[name] = _poll(get_protocol(name))[1]
    return _VALID[name]


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(1, 64),
    fix_checksums=st.booleans(),
)
def test_fuzz_mutated_valid_frames(name: str, edits: list[tuple[int, int]], cut: int, fix_checksums: bool) -> None:
    protocol = get_protocol(name)
    stream = bytearray(b"".join(_valid_replies(name)))
    for position, value in edits:
        stream[position % len(stream)] = value
    chunks = [bytes(stream[i : i + cut]) for i in range(0, len(stream), cut)]
    _feed_and_decode(protocol, chunks)
    if fix_checksums:
        # Mutated content behind a correct checksum must still only raise our errors.
        frames = []
        for reply in _valid_replies(name):
            mutated = bytearray(reply)
            for position, value in edits:
                mutated[position % len(mutated)] = value
            frames.append(_refresh_checksum(protocol, mutated))
        for frame in frames:
            try:
                decode(protocol, [frame], timestamp=0.0)
            except BmsgateError:
                pass


def _refresh_checksum(protocol: CompiledProtocol, frame: bytearray) -> bytes:
    framing = protocol.definition.framing
    frame[: len(framing.start)] = framing.start
    spec = framing.checksum
    if spec is None:
        return bytes(frame)
    size = len(frame)
    start = spec.start if spec.start >= 0 else size + spec.start
    end = spec.end if spec.end >= 0 else size + spec.end
    at = spec.at if spec.at >= 0 else size + spec.at
    algorithm = CHECKSUMS[spec.algorithm]
    if 0 <= start <= end <= size and at + algorithm.size <= size:
        frame[at : at + algorithm.size] = algorithm.compute(frame[start:end]).to_bytes(algorithm.size, spec.endian)
    return bytes(frame)


# -- 5. user file == built-in ------------------------------------------------------------------------------


def _comparable(snapshot: BatterySnapshot) -> dict[str, Any]:
    data = snapshot.to_dict()
    data.pop("timestamp")
    return data


@pytest.mark.parametrize("name", NAMES)
def test_user_file_copy_behaves_like_the_builtin(name: str, tmp_path: Path) -> None:
    builtin = get_protocol(name)
    text = resources.files("bmsgate.data.protocols").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    path = tmp_path / f"my-{name}.yaml"
    path.write_text(text, encoding="utf-8")
    user = load_protocol_file(path)
    assert user.definition.model_dump() == builtin.definition.model_dump()
    assert user.variant_names == builtin.variant_names
    pack, replies = _poll(builtin, cells=13, ntc=2, seed=5)
    user_replies = []
    user_bms = VirtualBms(user, pack)
    for request in user.requests_for(user_bms.device_name):
        if request.frame:
            user_replies += user_bms.handle_write(user.wire(request.frame))
        elif not request.follows:
            user_replies += user_bms.replies_for(request.reply or 0)
    assert user_replies == replies
    frames = _assemble(builtin, replies)
    assert _assemble(user, replies) == frames
    assert _comparable(decode(user, frames, timestamp=0.0)) == _comparable(decode(builtin, frames, timestamp=0.0))
    for variant in builtin.variant_names:
        # A forced layout that does not fit the frame may decode to impossible values: then both must
        # refuse the same way.
        outcomes: list[object] = []
        for protocol in (user, builtin):
            try:
                outcomes.append(_comparable(decode(protocol, frames, timestamp=0.0, variant=variant)))
            except DecodeError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1]


# -- 6. client and CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_simulated_battery_through_the_client(name: str) -> None:
    protocol = get_protocol(name)
    transport = SimulatorTransport(protocol, PackConfig(cells=15, ntc_count=2))
    # A protocol that logs in (x123smart's PIN) gets a secret; the simulated pack accepts any.
    options = ClientOptions(request_timeout=0.5, retries=1, secret=SIMULATED_SECRET if protocol.needs_secret else None)
    async with BatteryClient(protocol, transport, battery_id=name, options=options) as client:
        first = await client.read()
        second = await client.read()
    for snapshot in (first, second):
        assert snapshot.protocol == name
        assert snapshot.cell_count == _cells_reported(protocol, 15)
        # A power station (Allpowers) reports SoC but no pack voltage; every other family reports one.
        reported = protocol.definition.reported_targets
        if "voltage" in reported:
            assert snapshot.voltage is not None
        else:
            assert snapshot.soc is not None
    assert client.stats.failures == 0


@pytest.mark.parametrize("name", NAMES)
def test_cli_decodes_the_simulators_frames(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    protocol = get_protocol(name)
    frames = _assemble(protocol, _poll(protocol)[1])
    assert main(["decode", "--protocol", name, *(frame.hex("") for frame in frames)]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["protocol"] == name
    assert decoded["cell_count"] == _cells_reported(protocol, 16)

"""Credentials in the configuration: a wrongly typed one is refused without its value being shown."""

from __future__ import annotations

import logging
import types
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from bmsgate.app.config import GatewayConfig, config_from_mapping, is_secret_key
from bmsgate.app.gateway import build_gateway
from bmsgate.errors import ConfigError


def _battery(**extra: Any) -> dict[str, Any]:
    transport = {"type": "ble", "address": "a4:c1:37:00:11:22", **extra.pop("transport", {})}
    return {"id": "boat", "protocol": "x123smart", "transport": transport, **extra}


def _reasons(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    return [(problem.key_path, problem.reason) for problem in info.value.problems]


@pytest.mark.parametrize(("text", "shown"), [("1234", "1234"), ("0123", "83"), ("98.5", "98.5")])
def test_an_unquoted_numeric_secret_is_refused_without_echoing_it(text: str, shown: str) -> None:
    # YAML reads an unquoted PIN as a number (0123 as octal 83): the message said "(got 83)" before.
    data = {"batteries": [_battery(secret=yaml.safe_load(text))]}
    ((path, reason),) = _reasons(data)
    assert path == "batteries[0].secret"
    assert shown not in reason and text not in reason
    assert "quote it" in reason


@pytest.mark.parametrize(
    ("data", "path", "value"),
    [
        ({"batteries": [_battery(transport={"pin": 123456})]}, "batteries[0].transport.pin", "123456"),
        ({"batteries": [_battery(secret=["7788"])]}, "batteries[0].secret", "7788"),
        (
            {"batteries": [_battery(secret="1234")], "outputs": {"mqtt": {"password": 556677}}},
            "outputs.mqtt.password",
            "556677",
        ),
        (
            {"batteries": [_battery(secret="1234")], "outputs": {"mqtt": {"tls": {"key_pem": 99887766}}}},
            "outputs.mqtt.tls.key_pem",
            "99887766",
        ),
    ],
)
def test_no_credential_value_is_echoed_in_a_config_error(data: dict[str, Any], path: str, value: str) -> None:
    problems = _reasons(data)
    assert path in [problem_path for problem_path, _ in problems]
    assert all(value not in reason for _, reason in problems)


def test_other_values_are_still_echoed() -> None:
    (_, reason), *_ = _reasons({"batteries": [_battery(poll_interval=0.01)]})
    assert "(got 0.01)" in reason


def _fields(model: type[BaseModel], path: str = "") -> typing.Iterator[tuple[str, Any]]:
    """Every field of `model` and the models under it, as (dotted path, annotation)."""
    for name, field in model.model_fields.items():
        yield f"{path}.{name}" if path else name, field.annotation
        yield from _nested(field.annotation, f"{path}.{name}" if path else name)


def _nested(annotation: Any, path: str) -> typing.Iterator[tuple[str, Any]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _fields(annotation, path)
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _nested(typing.get_args(annotation)[0], path)
    elif origin in (typing.Union, types.UnionType, list, dict, tuple):
        for argument in typing.get_args(annotation):
            yield from _nested(argument, f"{path}[0]" if origin is list else path)


def _mentions_secret_str(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret_str(argument) for argument in typing.get_args(annotation))


def test_every_credential_field_of_the_configuration_is_covered_by_the_one_rule() -> None:
    fields = list(_fields(GatewayConfig))
    secret_fields = [path for path, annotation in fields if _mentions_secret_str(annotation)]
    named = [path for path, _ in fields if path.rsplit(".", 1)[-1] in ("pin", "password", "secret", "key_pem")]
    # The walk reaches each section's credentials (else this test would prove nothing).
    assert {"batteries[0].secret", "batteries[0].transport.pin", "outputs.mqtt.password"} <= set(secret_fields + named)
    assert any(path.endswith("tls.key_pem") for path in secret_fields)
    uncovered = [path for path in secret_fields + named if not is_secret_key(path)]
    assert uncovered == []
    assert not is_secret_key("batteries[0].poll_interval") and not is_secret_key("outputs.mqtt.host")


@pytest.mark.parametrize(
    ("secret", "said"),
    [("", "empty"), ("1" * 17, "longer"), ("  ", "blank"), ("12\r34", "printable"), ("1234é", "printable")],
)
def test_a_pin_the_login_cannot_carry_is_refused_when_the_gateway_is_built(secret: str, said: str) -> None:
    # Before, these failed only at the first connect (and 12\r34 put a line break into the login).
    config = config_from_mapping({"batteries": [_battery(secret=secret)]})
    with pytest.raises(ConfigError) as info:
        build_gateway(config)
    ((path, reason),) = [(problem.key_path, problem.reason) for problem in info.value.problems]
    assert path == "batteries[0].secret" and said in reason
    assert secret.strip() not in reason or not secret.strip()


def test_a_secret_on_a_protocol_that_uses_none_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    battery = _battery(secret="4321", protocol="jbd")
    with caplog.at_level(logging.WARNING, logger="bmsgate.app.gateway"):
        build_gateway(config_from_mapping({"batteries": [battery]}))
    (record,) = [record for record in caplog.records if "uses no secret" in record.message]
    assert "batteries[0].secret" in record.message and "4321" not in record.message

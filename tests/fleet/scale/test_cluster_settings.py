"""``fleet serve --cluster``: what it accepts and how it refuses the rest (no cluster needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bmsgate.app.cli.main import main
from bmsgate.fleet.server.nats_ingest import JetStreamSource, subject_topic
from bmsgate.fleet.server.service import FleetServerSettings


def test_cluster_mode_needs_nats_urls_and_the_mqtt_endpoint() -> None:
    settings = FleetServerSettings(cluster=["nats://n1:4222", "nats://n2:4222"], broker_url="mqtt://n1:1883")
    assert settings.cluster == ["nats://n1:4222", "nats://n2:4222"]
    assert FleetServerSettings().cluster == []  # off by default
    with pytest.raises(ValidationError, match="cluster needs broker_url"):
        FleetServerSettings(cluster=["nats://n1:4222"])
    with pytest.raises(ValidationError) as caught:
        FleetServerSettings(cluster=["nats://n1:4222", "http://n2"], broker_url="mqtt://n1:1883")
    assert caught.value.errors()[0]["loc"] == ("cluster",)
    assert "cluster[1]" in caught.value.errors()[0]["msg"]


def test_the_server_takes_more_broker_addresses_checked_as_a_gateways() -> None:
    settings = FleetServerSettings(broker_url="mqtt://n1:1883", broker_hosts=["n2:1883", "n3"])
    assert settings.broker_hosts == ["n2:1883", "n3"]
    with pytest.raises(ValidationError) as caught:
        FleetServerSettings(broker_url="mqtt://n1:1883", broker_hosts=["n2:1883", "n3:0"])
    assert caught.value.errors()[0]["loc"] == ("broker_hosts",)
    assert "broker_hosts[1]" in caught.value.errors()[0]["msg"]
    with pytest.raises(ValidationError, match="broker_hosts needs broker_url"):
        FleetServerSettings(broker_hosts=["n2:1883"])


def test_the_command_refuses_a_cluster_without_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "serve", "--cluster", "nats://127.0.0.1:1,nats://127.0.0.1:2"]) == 2
    assert "broker_url" in capsys.readouterr().err


def test_every_worker_shares_one_durable_explicitly_acknowledged_consumer() -> None:
    config = JetStreamSource(servers=("nats://n1:4222",)).consumer_config()
    assert config.durable_name == "bmsgate-ingest"
    assert config.ack_policy is not None and config.ack_policy.value == "explicit"  # never "all": it is shared
    assert config.num_replicas == 3
    assert config.filter_subjects == [
        "$MQTT.msgs.fleet.v1.*.availability",
        "$MQTT.msgs.fleet.v1.*.state",
        "$MQTT.msgs.fleet.v1.*.telemetry",
        "$MQTT.msgs.fleet.v1.*.event",
    ]


@given(subject=st.text(max_size=80))
def test_any_subject_maps_to_some_topic(subject: str) -> None:
    # Total: whatever NATS hands over becomes a topic string, which the fleet decoder then judges.
    assert isinstance(subject_topic(subject), str)

"""kafka.security as client settings: one place, every kind of client; passwords from the environment
or a file, never inline; conflicting options named."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError as CKafkaError

from infra.errors import CredentialsError
from infra.kafka import aiokafka_auth, client_config, describe, security_config, unreachable_message
from schemas.config import KafkaSettings, parse_config
from schemas.errors import ConfigError


def sasl(**extra: object) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": "b:9093",
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "username": "decider",
                "password_env": "TEST_KAFKA_PW",
                **extra,
            },
        }
    )


def test_sasl_and_tls_reach_confluent_and_aiokafka_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KAFKA_PW", "from-the-env")
    kafka = sasl(ssl_ca="/ca.pem", ssl_cert="/c.pem", ssl_key="/k.pem")
    assert security_config(kafka) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "decider",
        "sasl.password": "from-the-env",
        "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/c.pem",
        "ssl.key.location": "/k.pem",
    }
    conf = client_config(kafka, **{"group.id": "g"})
    assert conf["bootstrap.servers"] == "b:9093" and conf["group.id"] == "g" and conf["logger"] is not None
    plain = KafkaSettings.model_validate(
        {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password_env": "TEST_KAFKA_PW"}}
    )
    assert aiokafka_auth(plain) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "from-the-env",
    }
    assert describe(kafka) == "Kafka at b:9093 (SASL_SSL, SCRAM-SHA-512 as decider)"


def test_the_password_comes_from_a_file_or_the_error_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    file_based = KafkaSettings.model_validate(
        {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password_file": str(secret)}}
    )
    assert security_config(file_based)["sasl.password"] == "from-a-file"
    monkeypatch.delenv("TEST_KAFKA_PW", raising=False)
    with pytest.raises(CredentialsError, match="TEST_KAFKA_PW is not set"):
        security_config(sasl())
    missing = KafkaSettings.model_validate(
        {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password_file": str(tmp_path / "nope")}}
    )
    with pytest.raises(CredentialsError, match="cannot read the password file"):
        security_config(missing)


def test_a_password_inline_is_refused_with_where_to_put_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'kafka\.security\.password'.*password_env"):
        parse_config({"kafka": {"security": {"protocol": "SASL_PLAINTEXT", "username": "u", "password": "x"}}})


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SASL_PLAINTEXT", "password_env": "X"}, "needs kafka.security.username"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u"}, "exactly one of kafka.security.password_env"),
        ({"protocol": "PLAINTEXT", "username": "u"}, "use SASL_PLAINTEXT or SASL_SSL"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u", "password_env": "X", "ssl_ca": "/ca"}, "use SSL or SASL_SSL"),
        ({"protocol": "SSL", "ssl_cert": "/c"}, "ssl_cert and kafka.security.ssl_key go together"),
    ],
)
def test_conflicting_security_options_are_named(security: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"kafka": {"security": security}})


def test_the_one_line_names_the_cause_and_the_remedy() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    refused = CKafkaError(CKafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed: Connection refused")
    line = unreachable_message(kafka, [refused], "metadata")
    assert line.startswith("cannot reach Kafka at 127.0.0.1:1 (PLAINTEXT): Connect to") and "samtuner kafka up" in line
    auth = CKafkaError(CKafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    line = unreachable_message(sasl(), [auth], "metadata")
    assert "refused our credentials" in line and "environment variable TEST_KAFKA_PW" in line

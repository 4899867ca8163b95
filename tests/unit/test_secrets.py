"""Secrets out of every output: what counts as one, and that a config dump never shows one."""

from __future__ import annotations

from schemas.config import Config
from schemas.secrets import MASK, Masker, is_secret_key, redact, redact_url


def test_secret_keys_are_whole_words_and_where_a_secret_lives_is_not_one() -> None:
    for key in ("password", "hub_token", "api_key", "apiKey", "client_secret", "sasl-password", "private_key"):
        assert is_secret_key(key), key
    for key in (
        "max_new_tokens",
        "prompt_tokens",
        "password_env",
        "password_file",
        "keys_file",
        "sha256",
        "response_tokens",
        "tokenizer",
        "secretary",
    ):
        assert not is_secret_key(key), key


def test_urls_lose_their_password_anywhere_in_a_text() -> None:
    assert redact_url("cannot open http://default:s3cr3t@db:8123/x") == f"cannot open http://default:{MASK}@db:8123/x"
    assert redact_url("http://default:@db:8123") == "http://default:@db:8123"  # no password: nothing to hide
    assert redact_url("chdb:///tmp/x") == "chdb:///tmp/x"


def test_a_config_dump_shows_where_secrets_are_never_what_they_are() -> None:
    cfg = Config.model_validate(
        {
            "clickhouse": {"dsn": "http://default:s3cr3t-ch@db:8123"},
            "kafka": {"security": {"protocol": "SASL_PLAINTEXT", "username": "decider", "password_env": "KAFKA_PW"}},
            "training": {"dpo": {"hub_token": "hf_s3cr3t", "max_length": 64}},
        }
    )
    dumped = redact(cfg.model_dump(mode="json"))
    text = repr(dumped)
    assert "s3cr3t" not in text
    assert dumped["kafka"]["security"]["password_env"] == "KAFKA_PW"
    assert dumped["model"]["max_new_tokens"] == cfg.model.max_new_tokens
    assert cfg.redacted() == dumped
    Config.model_validate(cfg.redacted())  # what a job subprocess gets is still a valid config


def test_the_masker_hides_known_values_longest_first() -> None:
    mask = Masker(["abcd1234", "abcd1234-more", "xy"])  # too short to mask safely: kept
    assert mask("p=abcd1234-more q=abcd1234 r=xy") == f"p={MASK} q={MASK} r=xy"

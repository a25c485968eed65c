"""The redaction every log line and error message about URLs and secrets goes through (the
service-level test is tests/service/test_secrets.py)."""

from __future__ import annotations

from config.redact import is_secret_key, redact


def test_the_password_of_every_url_in_a_text_is_hidden() -> None:
    text = "cannot open 'rtsp://admin:secret@10.0.0.5:554/ch1' after postgresql://u:pw@db/x"
    assert (
        redact(text)
        == "cannot open 'rtsp://admin:***@10.0.0.5:554/ch1' after postgresql://u:***@db/x"
    )
    assert redact("rtsp://10.0.0.5/ch1") == "rtsp://10.0.0.5/ch1"


def test_named_secrets_are_hidden_wherever_they_appear() -> None:
    assert redact("auth failed for p@ss-word", ["p@ss-word", None, ""]) == "auth failed for ***"


def test_secret_keys() -> None:
    assert is_secret_key("mqtt.password") and is_secret_key("influx.token")
    assert is_secret_key("x.api_key") and not is_secret_key("mqtt.host")

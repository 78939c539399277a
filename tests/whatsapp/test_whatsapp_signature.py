"""Webhook authentication: Meta X-Hub-Signature-256 and the Evolution shared-secret header."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.whatsapp import sign_meta, verify_meta_signature, verify_shared_secret

SECRET = "app-secret-\u00e7"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_sign_meta_matches_a_plain_hmac_with_lowercase_hex() -> None:
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign_meta(BODY, SECRET) == f"sha256={expected}"
    assert expected == expected.lower()


def test_valid_signature_verifies() -> None:
    assert verify_meta_signature(BODY, sign_meta(BODY, SECRET), SECRET)


def test_wrong_secret_is_rejected() -> None:
    assert not verify_meta_signature(BODY, sign_meta(BODY, "another-secret"), SECRET)


def test_tampered_body_is_rejected() -> None:
    assert not verify_meta_signature(BODY + b" ", sign_meta(BODY, SECRET), SECRET)


def test_uppercase_hex_and_scheme_and_whitespace_are_tolerated() -> None:
    header = sign_meta(BODY, SECRET)
    assert verify_meta_signature(BODY, "sha256=" + header[7:].upper(), SECRET)
    assert verify_meta_signature(BODY, "SHA256=" + header[7:], SECRET)
    assert verify_meta_signature(BODY, f"  {header}\t", SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 63,
        "sha256=" + "g" * 64,
        "sha256=" + "\u0660" * 64,  # non-ASCII digits must not reach compare_digest
        "md5 sha256=abc",
    ],
)
def test_missing_or_malformed_headers_are_rejected(header: str | None) -> None:
    assert not verify_meta_signature(BODY, header, SECRET)


def test_signature_without_prefix_is_rejected() -> None:
    assert not verify_meta_signature(BODY, sign_meta(BODY, SECRET)[7:], SECRET)


def test_empty_app_secret_never_verifies() -> None:
    assert not verify_meta_signature(BODY, sign_meta(BODY, ""), "")


def test_non_ascii_body_is_verified_over_the_escaped_bytes_meta_sends() -> None:
    # Given a payload with non-ASCII text serialised as Meta does (ensure_ascii escapes) and signed as sent
    payload = {"text": {"body": "ol\u00e1 \u2014 \U0001f600"}}
    sent = json.dumps(payload, ensure_ascii=True).encode()
    assert b"\\u00e1" in sent and b"\\ud83d\\ude00" in sent
    header = sign_meta(sent, SECRET)
    # Then the exact bytes verify, while a re-serialisation (raw UTF-8) of the same JSON does not
    assert verify_meta_signature(sent, header, SECRET)
    assert not verify_meta_signature(json.dumps(payload, ensure_ascii=False).encode(), header, SECRET)


def test_shared_secret() -> None:
    assert verify_shared_secret("s3cret-\u00e9", "s3cret-\u00e9")
    assert not verify_shared_secret("s3cret", "s3cret-\u00e9")
    assert not verify_shared_secret(None, "s3cret")
    assert not verify_shared_secret("", "")
    assert not verify_shared_secret("\ud800", "s3cret")


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=40), other=st.text(max_size=40))
def test_sign_then_verify_roundtrip(body: bytes, secret: str, other: str) -> None:
    header = sign_meta(body, secret)
    assert verify_meta_signature(body, header, secret)
    assert verify_meta_signature(body, header, other) == (other == secret)


@settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.none(), st.text(max_size=80)), secret=st.text(max_size=20))
def test_verify_never_raises(header: str | None, secret: str) -> None:
    assert verify_meta_signature(BODY, header, secret) in (True, False)
    assert verify_shared_secret(header, secret) == bool(secret and header == secret)

"""``POST /api/media`` and ``GET /api/media/{id}``: Meta's per-type limits (415/413 before anything is kept), a
streamed round trip with its hash, company scoping."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from libs.media import limits
from libs.settings import Settings
from tests.api.conftest import make_company

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
PDF = b"%PDF-1.7\n" + b"x" * 5000


def webp(size: int, *, animated: bool) -> bytes:
    """A WebP file of ``size`` bytes (an extended header with the animation flag when ``animated``)."""
    header = b"RIFF" + (size - 8).to_bytes(4, "little") + b"WEBP"
    chunk = b"VP8X" + (10).to_bytes(4, "little") + bytes([0x02 if animated else 0x00]) + b"\x00" * 9
    return (header + chunk).ljust(size, b"\x00")


def upload(api: TestClient, company_id: int, data: bytes, mime: str, name: str = "f.bin") -> Any:
    return api.post(f"/api/media?company_id={company_id}", files={"file": (name, data, mime)})


def stored_files(settings: Settings) -> list[Path]:
    """Every file kept under the media directory (spool files excluded)."""
    root = Path(settings.media_dir)
    return [p for p in root.rglob("*") if p.is_file() and ".spool" not in p.parts] if root.exists() else []


def test_an_upload_round_trips_with_its_size_and_hash(api: TestClient, settings: Settings) -> None:
    # Given a company
    company = make_company(api)
    # When a JPEG is uploaded
    response = upload(api, company["id"], JPEG, "image/jpeg", "photo.jpg")
    # Then it is kept with its MIME type, size and SHA-256, and reads back byte for byte
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("med_") and body["direction"] == "out"
    assert (body["mime_type"], body["size"], body["sha256"]) == (
        "image/jpeg",
        len(JPEG),
        hashlib.sha256(JPEG).hexdigest(),
    )
    assert body["filename"] == "photo.jpg"
    got = api.get(f"/api/media/{body['id']}")
    assert got.status_code == 200
    assert got.content == JPEG
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["etag"] == f'"{body["sha256"]}"'


def test_a_type_meta_refuses_is_415_and_nothing_is_kept(api: TestClient, settings: Settings) -> None:
    company = make_company(api)
    before = stored_files(settings)
    # A GIF is no WhatsApp media type
    response = upload(api, company["id"], b"GIF89a" + b"\x00" * 50, "image/gif")
    assert response.status_code == 415
    assert "image/gif" in response.json()["error"]
    # A "PNG" whose bytes are not a PNG
    response = upload(api, company["id"], JPEG, "image/png")
    assert response.status_code == 415
    assert stored_files(settings) == before
    assert os.listdir(os.path.join(settings.media_dir, ".spool")) == []


def test_a_file_over_its_type_limit_is_413_and_nothing_is_kept(api: TestClient, settings: Settings) -> None:
    company = make_company(api)
    before = stored_files(settings)
    # An image over 5 MB
    too_big = PNG + b"\x00" * (limits.IMAGE.max_bytes - len(PNG) + 1)
    response = upload(api, company["id"], too_big, "image/png")
    assert response.status_code == 413
    # A static sticker over 100 KB (an animated one of the same size is fine)
    assert upload(api, company["id"], webp(150 * 1024, animated=False), "image/webp").status_code == 413
    assert upload(api, company["id"], webp(150 * 1024, animated=True), "image/webp").status_code == 201
    # An animated sticker over 500 KB
    assert upload(api, company["id"], webp(501 * 1024, animated=True), "image/webp").status_code == 413
    assert len(stored_files(settings)) == len(before) + 1
    assert os.listdir(os.path.join(settings.media_dir, ".spool")) == []


def test_bad_upload_bodies_are_clear_4xx(api: TestClient) -> None:
    company = make_company(api)
    # Not multipart
    response = api.post(
        f"/api/media?company_id={company['id']}", content=PDF, headers={"content-type": "application/pdf"}
    )
    assert response.status_code == 415
    # Multipart without a 'file' part
    response = api.post(f"/api/media?company_id={company['id']}", files={"other": ("a.txt", b"hi", "text/plain")})
    assert response.status_code == 400
    # A text field longer than a field may be
    response = api.post(f"/api/media?company_id={company['id']}", files={"other": ("a.pdf", PDF, "application/pdf")})
    assert response.status_code == 413
    # A broken multipart body
    response = api.post(
        f"/api/media?company_id={company['id']}",
        content=b"--xyz\r\nnot a header line\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400
    # No company
    assert api.post("/api/media", files={"file": ("a.pdf", PDF, "application/pdf")}).status_code == 400
    # An unknown company
    assert upload(api, 999_999, PDF, "application/pdf").status_code == 404
    # An empty file
    assert upload(api, company["id"], b"", "text/plain").status_code == 400


def test_a_company_key_reaches_only_its_own_media(api: TestClient, app_client: TestClient) -> None:
    # Given a file of company A and a key of company B
    a, b = make_company(api, "A"), make_company(api, "B")
    media_id = upload(api, a["id"], PDF, "application/pdf", "invoice.pdf").json()["id"]
    key = api.post("/api/keys", json={"company_id": b["id"], "scopes": ["messages:read", "messages:write"]}).json()
    headers = {"authorization": f"Bearer {key['key']}"}
    # Then B's key cannot read it (404, as an unknown id) nor upload for A (403)
    assert app_client.get(f"/api/media/{media_id}", headers=headers).status_code == 404
    response = app_client.post(
        f"/api/media?company_id={a['id']}", files={"file": ("a.pdf", PDF, "application/pdf")}, headers=headers
    )
    assert response.status_code == 403
    # And its own upload needs no company_id
    own = app_client.post("/api/media", files={"file": ("a.pdf", PDF, "application/pdf")}, headers=headers)
    assert own.status_code == 201 and own.json()["company_id"] == b["id"]
    # A malformed or unknown id is 404
    assert api.get("/api/media/med_nothing").status_code == 404
    assert api.get("/api/media/med_" + "0" * 32).status_code == 404

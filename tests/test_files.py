"""Files: upload, metadata, list, signed download URLs, delete, size limit."""
from __future__ import annotations

import hashlib
import io
import os
from urllib.parse import quote, urlsplit

from app.extensions import db
from app.models import File
from app.services import files as file_service


def _upload(client, user, episode_id, data=b"some bytes", name="clip.mp3"):
    return client.post(f"/api/v1/episodes/{episode_id}/files", headers=user.headers,
                       data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_upload_then_download_through_signed_url(client, editor, viewer, episode):
    payload = os.urandom(50_000)
    r = _upload(client, editor, episode["id"], payload, "take1.wav")
    assert r.status_code == 201
    meta = r.json
    assert meta["size"] == len(payload) and meta["sha256"] == hashlib.sha256(payload).hexdigest()
    assert client.get(f"/api/v1/files/{meta['id']}", headers=viewer.headers).json["filename"] == "take1.wav"
    listing = client.get(f"/api/v1/episodes/{episode['id']}/files", headers=viewer.headers).json
    assert [f["id"] for f in listing["items"]] == [meta["id"]]

    signed = client.get(f"/api/v1/files/{meta['id']}/download-url", headers=viewer.headers).json
    assert signed["expires_at"].endswith("Z")
    download = client.get(_path_and_query(signed["url"]))  # no Authorization header
    assert download.status_code == 200
    assert download.data == payload


def test_expired_or_tampered_url_is_404(app, client, editor, episode):
    meta = _upload(client, editor, episode["id"]).json
    with app.app_context():
        file = db.session.get(File, meta["id"])
        from app.models import User

        token, _ = file_service.make_download_token(file, db.session.get(User, editor.id), ttl=-5)
    r = client.get(f"/api/v1/files/{meta['id']}/download?token={token}")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    signed = client.get(f"/api/v1/files/{meta['id']}/download-url", headers=editor.headers).json
    url = _path_and_query(signed["url"])
    assert client.get(url[:-3] + "abc").status_code == 404
    assert client.get(f"/api/v1/files/{meta['id']}/download").status_code == 404
    # A token for one file does not open another.
    other = _upload(client, editor, episode["id"]).json
    token = urlsplit(signed["url"]).query.split("token=")[1]
    assert client.get(f"/api/v1/files/{other['id']}/download?token={token}").status_code == 404


def test_delete_removes_row_and_bytes(app, client, editor, viewer, episode):
    meta = _upload(client, editor, episode["id"]).json
    with app.app_context():
        path = file_service.path_of(db.session.get(File, meta["id"]))
    assert path.exists()
    assert client.delete(f"/api/v1/files/{meta['id']}", headers=viewer.headers).status_code == 403
    assert client.delete(f"/api/v1/files/{meta['id']}", headers=editor.headers).status_code == 204
    assert not path.exists()
    assert client.get(f"/api/v1/files/{meta['id']}", headers=editor.headers).status_code == 404


def test_too_large_upload_is_413(client, editor, episode):
    r = _upload(client, editor, episode["id"], b"x" * (2 * 1024 * 1024))
    assert r.status_code == 413
    assert r.json["error"]["code"] == "payload_too_large"


def test_upload_validation(client, editor, viewer, episode):
    r = client.post(f"/api/v1/episodes/{episode['id']}/files", headers=editor.headers,
                    data={}, content_type="multipart/form-data")
    assert r.status_code == 422 and "file" in r.json["error"]["details"]
    assert _upload(client, viewer, episode["id"]).status_code == 403
    assert _upload(client, editor, 424242).status_code == 404


def test_old_link_does_not_open_a_new_file_with_a_reused_id(client, editor, episode):
    meta = _upload(client, editor, episode["id"], b"old", "old.txt").json
    signed = client.get(f"/api/v1/files/{meta['id']}/download-url", headers=editor.headers).json
    client.delete(f"/api/v1/files/{meta['id']}", headers=editor.headers)
    again = _upload(client, editor, episode["id"], b"NEW-SECRET", "new.txt").json
    r = client.get(_path_and_query(signed["url"]))
    assert r.status_code == 404 or again["id"] != meta["id"]
    assert b"NEW-SECRET" not in r.data


def _upload_exact_name(client, user, episode_id, data: bytes, name: str):
    """A multipart upload whose name arrives exactly as given: RFC 5987 ``filename*``
    (percent-encoded UTF-8), which werkzeug decodes as is. A plain quoted ``filename``
    loses single backslashes to quoted-string unescaping, which would hide the bug."""
    boundary = "ec-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename*=UTF-8''{quote(name, safe='')}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + (
            f"\r\n--{boundary}--\r\n").encode()
    return client.post(f"/api/v1/episodes/{episode_id}/files", data=body, headers={
        **user.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_upload_names_are_cleaned_of_paths_controls_and_device_names(client, editor, episode):
    cases = {
        "x\\..\\..\\Users\\Public\\evil.bat": "evil.bat",  # Windows separators
        "../../etc/passwd": "passwd",
        "a\x01b\x1fc\x7f.txt": "abc.txt",  # control characters
        "CON.txt": "_CON.txt", "nul": "_nul", "com1.tar.gz": "_com1.tar.gz", "LPT9 .log": "_LPT9 .log",
        "CONSOLE.txt": "CONSOLE.txt",  # not a device
        "a:b?c*.txt": "a_b_c_.txt",  # Windows-forbidden characters (":" is an alternate stream)
        "evil\u202egpj.exe": "evilgpj.exe",  # a bidi override would show "evilexe.jpg"
        " .hidden. ": "hidden",
        "Ünïcødé take.wav": "Ünïcødé take.wav",
        "x" * 300 + ".wav": "x" * 251 + ".wav",
    }
    for raw, expected in cases.items():
        response = _upload_exact_name(client, editor, episode["id"], b"bytes", raw)
        assert response.status_code == 201, (raw, response.json)
        assert response.json["filename"] == expected, raw
        url = client.get(f"/api/v1/files/{response.json['id']}/download-url", headers=editor.headers)
        disposition = client.get(_path_and_query(url.json["url"])).headers["Content-Disposition"]
        assert disposition.startswith("attachment") and "\\" not in disposition
    for hopeless in ("..\\..\\", " . ", "\x00\x01"):
        response = _upload_exact_name(client, editor, episode["id"], b"bytes", hopeless)
        assert response.status_code == 422, hopeless
        assert "file" in response.json["error"]["details"]


def test_a_stored_name_is_cleaned_again_at_download(app, client, editor, episode):
    """Rows written before names were cleaned still download under a safe name."""
    meta = _upload(client, editor, episode["id"], b"old", "old.bat").json
    with app.app_context():
        db.session.get(File, meta["id"]).filename = "x\\..\\..\\Users\\Public\\evil.bat"
        db.session.commit()
    url = client.get(f"/api/v1/files/{meta['id']}/download-url", headers=editor.headers).json["url"]
    disposition = client.get(_path_and_query(url)).headers["Content-Disposition"]
    assert disposition == "attachment; filename=evil.bat"

"""The handler of each job type: a function ``(JobContext) -> results dict``.

A handler does real work on the stored files, calls ``ctx.progress`` between units of
work (that is also where a cancel stops it), and raises to fail the attempt; the runner
owns every state change, retry and event.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

from sqlalchemy import select

from app.extensions import db
from app.jobs.context import JobContext, PermanentJobError
from app.models import DomainEvent, Episode, File, User, isoformat, utcnow
from app.serializers import episode_dict, file_dict
from app.services import files as file_service

CHUNK = 1024 * 1024


# ---- export ----------------------------------------------------------------------------


def _export_file_ids(file_ids: list[int]) -> set[int]:
    """Which of these files an earlier export produced (so exports never nest exports)."""
    if not file_ids:
        return set()
    query = (
        select(DomainEvent.resource_id)
        .where(DomainEvent.resource_type == "file", DomainEvent.name == "file_uploaded",
               DomainEvent.resource_id.in_(file_ids),
               DomainEvent.payload["source"].as_string() == "export")
    )
    return set(db.session.scalars(query))


def export(ctx: JobContext) -> dict:
    """Zip the episode's metadata (JSON) and files; store the zip as a new file of the episode.

    The zip is written to a temporary file and only handed to ``add_file`` once complete,
    so a cancel or a crash leaves no half-written output behind. The output's row and event
    are flushed, not committed: they commit with the job's completion (the runner), and a
    completion that does not happen (job lost, cancelled) takes them and the bytes back.
    """
    episode = db.session.get(Episode, ctx.episode_id)
    if episode is None:
        raise PermanentJobError("Episode not found")
    rows = list(db.session.scalars(
        select(File).where(File.episode_id == episode.id).order_by(File.id)))
    previous_exports = _export_file_ids([f.id for f in rows])
    files = [f for f in rows if f.id not in previous_exports]
    metadata = {
        "episode": episode_dict(episode),
        "files": [file_dict(f) for f in files],
        "exported_at": isoformat(utcnow()),
        "job_id": ctx.job_id,
    }
    sources = [(f.id, f.filename, f.size, file_service.path_of(f)) for f in files]
    creator = db.session.get(User, ctx.created_by) if ctx.created_by else None
    db.session.rollback()  # end the read transaction: never idle in a transaction while copying

    storage = file_service.storage_dir()
    for leftover in storage.glob(f"export-{ctx.job_id}-*.zip.part"):  # a killed earlier attempt
        leftover.unlink(missing_ok=True)
    include_files = ctx.params.get("include_files", True)
    total = max(1, sum(size for _, _, size, _ in sources)) if include_files else 1
    done, included, missing = 0, [], []
    ctx.progress(1, "Writing metadata")
    fd, tmp_name = tempfile.mkstemp(prefix=f"export-{ctx.job_id}-", suffix=".zip.part",
                                    dir=storage)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(out, "w") as archive:
            archive.writestr("metadata.json", json.dumps(metadata, indent=2),
                             compress_type=zipfile.ZIP_DEFLATED)
            for file_id, filename, _size, path in (sources if include_files else ()):
                if not path.exists():
                    missing.append({"file_id": file_id, "filename": filename})
                    continue
                # Cleaned again (rows stored before names were cleaned): no entry may carry
                # a path separator or a device name into someone's extractor.
                arcname = f"files/{file_id}-{file_service.clean_filename(filename, fallback='file')}"
                done = _add_to_zip(ctx, archive, path, arcname, done, total)
                included.append(file_id)
        ctx.progress(95, "Storing the archive")  # the last point where a cancel still applies
        with open(tmp_name, "rb") as stream:
            stored = file_service.add_file(
                creator, ctx.episode_id, stream, f"episode-{ctx.episode_id}-export-{ctx.job_id}.zip",
                "application/zip", extra_payload={"source": "export", "job_id": ctx.job_id})
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    # No checkpoint after this point: the output exists, so a late cancel must not win.
    return {"file_id": stored.id, "file_name": stored.filename, "size": stored.size,
            "sha256": stored.sha256, "included_file_ids": included, "missing": missing}


def _add_to_zip(ctx: JobContext, archive: zipfile.ZipFile, path: Path, arcname: str,
                done: int, total: int) -> int:
    """Copy one file into the zip by chunks, reporting progress (media barely compresses)."""
    info = zipfile.ZipInfo.from_file(path, arcname)
    info.compress_type = zipfile.ZIP_STORED
    with path.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            done += len(chunk)
            ctx.progress(2 + 90 * done / total, f"Adding {path.name}")
    return done


# ---- checksum --------------------------------------------------------------------------


def checksum(ctx: JobContext) -> dict:
    """SHA-256 of each stored file against the recorded one: mismatches and missing bytes."""
    query = select(File).where(File.episode_id == ctx.episode_id).order_by(File.id)
    wanted = ctx.params.get("file_ids")
    if wanted is not None:
        query = query.where(File.id.in_(wanted))
    targets = [(f.id, f.filename, f.sha256, f.size, file_service.path_of(f))
               for f in db.session.scalars(query)]
    db.session.rollback()  # end the read transaction: never idle in one while hashing
    unknown = sorted(set(wanted or ()) - {t[0] for t in targets})
    total = max(1, sum(t[3] for t in targets))
    done, report, mismatches, missing = 0, [], [], []
    ctx.progress(0, f"Checking {len(targets)} files")
    for file_id, filename, expected, _size, path in targets:
        entry = {"file_id": file_id, "filename": filename, "expected": expected}
        if not path.exists():
            entry.update(status="missing", actual=None)
            missing.append(entry)
            report.append(entry)
            continue
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                done += len(chunk)
                ctx.progress(100 * done / total, f"Hashing {filename}")
        entry.update(actual=digest.hexdigest())
        entry["status"] = "ok" if entry["actual"] == expected else "mismatch"
        if entry["status"] == "mismatch":
            mismatches.append(entry)
        report.append(entry)
    ctx.progress(100, "Checked")
    return {"checked": len(targets), "ok": len(targets) - len(mismatches) - len(missing),
            "mismatches": mismatches, "missing": missing, "unknown_file_ids": unknown,
            "files": report}


# ---- noop ------------------------------------------------------------------------------


def noop(ctx: JobContext) -> dict:
    """Diagnostics: wait ``duration_ms`` over ``steps`` checkpoints; fail the first N tries.

    ``fail_times`` is how tests and operators exercise retries and backoff for real.
    """
    fail_times, steps = ctx.params.get("fail_times", 0), ctx.params.get("steps", 1)
    if ctx.attempt < fail_times:
        raise RuntimeError(f"noop failing on purpose (attempt {ctx.attempt + 1} of {fail_times})")
    pause = ctx.params.get("duration_ms", 0) / 1000 / steps
    for step in range(1, steps + 1):
        if pause:
            time.sleep(pause)
        ctx.progress(100 * step / steps, f"Step {step} of {steps}")
    return {"steps": steps, "duration_ms": ctx.params.get("duration_ms", 0),
            "attempt": ctx.attempt}

"""The batch job's manifest: what a run is, and which shards are complete.

A manifest is JSON::

    {"manifest_version": 1,
     "job": {signature, model, seed, num_samples, shard_size, format,
             shard_index, num_shards},
     "total_shards": ..., "worker_shards": ..., "worker_samples": ...,
     "shards": [{"shard", "file", "start", "stop", "count", "sha256"}, ...],
     "complete_samples": ..., "complete": true|false}

A rerun resumes only a manifest whose ``job`` equals its own
(`job_differences` says what differs otherwise), and trusts a listed shard only
while its file still has the listed sha256 (`digest_of`). The job writes the
manifest atomically after every shard (`encode` gives the bytes).

Pure functions and file reads; no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

from serving.errors import EXIT_USAGE, JobError

MANIFEST_VERSION = 1


def manifest_name(shard_index: int, num_shards: int) -> str:
    """Each worker of a job sharing --out has its own manifest."""
    if num_shards == 1:
        return "manifest.json"
    return f"manifest-{shard_index:05d}-of-{num_shards:05d}.json"


def make_manifest(job: dict, total_shards: int, shards: list, entries: list) -> dict:
    """The manifest of a worker's ``shards`` of which ``entries`` are complete."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "job": job,
        "total_shards": total_shards,
        "worker_shards": len(shards),
        "worker_samples": sum(s.count for s in shards),
        "shards": entries,
        "complete_samples": sum(e["count"] for e in entries),
        "complete": len(entries) == len(shards),
    }


def shard_entry(shard, digest: str) -> dict:
    """The manifest's record of a complete shard."""
    return {"shard": shard.index, "file": shard.name, "start": shard.start,
            "stop": shard.stop, "count": shard.count, "sha256": digest}


def encode(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def read_manifest(path: str) -> Optional[dict]:
    """The manifest at ``path``, None if there is none; JobError if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise JobError(f"cannot read the manifest {path!r}: {e}; move it away "
                       f"to start over", EXIT_USAGE) from e
    if not isinstance(manifest, dict) or manifest.get(
            "manifest_version") != MANIFEST_VERSION:
        raise JobError(f"{path!r} is not a manifest of this job format "
                       f"(manifest_version {MANIFEST_VERSION})", EXIT_USAGE)
    return manifest


def job_differences(old: dict, new: dict) -> list:
    """"key: old in the manifest, new now" for each key of ``job`` that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the manifest, {new.get(k)!r} now"
            for k in keys if old.get(k) != new.get(k)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def directory_digest(lines: list) -> str:
    """The sha256 of a directory shard from its "<name> <sha256>\\n" lines."""
    return sha256("".join(sorted(lines)).encode())


def digest_of(path: str) -> Optional[str]:
    """sha256 of a shard file, or of a png shard directory; None if absent."""
    if os.path.isdir(path):
        lines = []
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), "rb") as f:
                lines.append(f"{name} {sha256(f.read())}\n")
        return directory_digest(lines)
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except FileNotFoundError:
        return None


def verified_entries(existing: Optional[dict], shards: list, out_dir: str,
                     log=None) -> dict:
    """{shard index: entry} of the shards ``existing`` lists whose files still match."""
    done = {}
    if existing is None:
        return done
    listed = {e["shard"]: e for e in existing.get("shards", [])}
    for shard in shards:
        entry = listed.get(shard.index)
        if entry is None or entry.get("file") != shard.name or (
                entry.get("start"), entry.get("stop")) != (shard.start, shard.stop):
            continue
        if digest_of(os.path.join(out_dir, shard.name)) == entry.get("sha256"):
            done[shard.index] = entry
        elif log is not None:
            log(f"generate: {shard.name} is missing or does not match its "
                f"checksum; generating it again")
    return done

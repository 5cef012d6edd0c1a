"""The one results cache and the one file hash.

A result is stored as JSON under the hash of its key, and the key is made of the hashes
of every input (model file, data, settings), so a changed input is recomputed and an
unchanged one is read back.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["sha256_file", "sha256_array", "cached"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def cached(cache_dir: Path, key: Mapping[str, Any], work) -> dict[str, Any]:
    """Run ``work()`` unless a result for ``key`` is in ``cache_dir``; store it as JSON."""
    blob = json.dumps(key, sort_keys=True).encode()
    path = cache_dir / f"{hashlib.sha256(blob).hexdigest()[:24]}.json"
    if path.exists():
        try:
            rec = json.loads(path.read_text())
            if rec.get("key") == json.loads(blob):
                return rec["result"]
        except (ValueError, KeyError):
            pass  # a damaged cache entry is recomputed
    result = work()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": json.loads(blob), "result": result}, indent=1, sort_keys=True))
    tmp.replace(path)
    return result

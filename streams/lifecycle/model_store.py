"""Versioned model checkpoints on disk and the records that announce them on ``model-updates``.

A version is one file ``v{version:08d}.pt`` in the store directory (settings ``data_dir/models``;
with several machines, a shared volume), written atomically by ``model.checkpoint``. The record
published for it carries the file's sha256; a worker loads a version only if the file it reads
has that checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import StreamRecError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^v(\d{8})\.pt$")


class ModelStoreError(StreamRecError):
    pass


@dataclass(frozen=True)
class ModelUpdate:
    version: int
    path: str
    sha256: str
    created_ts: float
    metrics: dict = field(default_factory=dict)
    rollback: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ModelUpdate":
        try:
            body = json.loads(raw)
            return cls(version=int(body["version"]), path=str(body["path"]), sha256=str(body["sha256"]),
                       created_ts=float(body["created_ts"]), metrics=dict(body.get("metrics") or {}),
                       rollback=bool(body.get("rollback", False)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(f"not a model-update record: {exc}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, directory: Path, keep: int = 5) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, version: int) -> Path:
        return self.directory / f"v{version:08d}.pt"

    def versions(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _NAME.match(p.name)))

    def save(self, recommender, metrics: dict | None = None, optimizer_state: dict | None = None,
             replay_state: dict | None = None) -> ModelUpdate:
        """Write ``recommender`` (its ``version`` names the file) and return its update record."""
        path = self.path_for(recommender.version)
        recommender.save(str(path), optimizer_state=optimizer_state, meta={"metrics": metrics or {}},
                         replay_state=replay_state)
        update = ModelUpdate(recommender.version, str(path.resolve()), sha256_file(path), time.time(),
                             metrics or {})
        self.prune()
        return update

    def prune(self) -> None:
        for version in self.versions()[:-self.keep]:
            self.path_for(version).unlink(missing_ok=True)

    def update_for(self, version: int, rollback: bool = False) -> ModelUpdate:
        """The record of a stored version (for ``streamrec rollback``)."""
        path = self.path_for(version)
        if not path.exists():
            raise ModelStoreError(f"version {version} is not in the model store {self.directory} "
                                  f"(kept: {self.versions() or 'none'})")
        return ModelUpdate(version, str(path.resolve()), sha256_file(path), path.stat().st_mtime, {}, rollback)


def verify(update: ModelUpdate) -> Path:
    """The checkpoint's path if its bytes have the announced checksum; else ModelStoreError."""
    path = Path(update.path)
    if not path.exists():
        raise ModelStoreError(f"checkpoint {path} of version {update.version} does not exist")
    actual = sha256_file(path)
    if actual != update.sha256:
        raise ModelStoreError(f"checkpoint {path} of version {update.version} has sha256 {actual[:12]}..., "
                              f"announced {update.sha256[:12]}...: refusing it")
    return path

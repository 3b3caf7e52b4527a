"""Save / load an ``ItemIndex`` as one file with a sha256 checksum.

Layout::

    b"STRMIDX1"                 8-byte magic
    header length               8 bytes, little-endian unsigned
    header                      JSON: format, sha256 (hex, of the body), body_len, meta_len
    body = meta JSON || FAISS serialized index

``meta`` holds version, kind, dim, params, effort, ids by label and the alive bitmap.
GPU indexes are copied to the CPU to be written; ``load(..., use_gpu=None)`` puts them back on the
GPU when there is one. Writes go to a temporary file then ``os.replace`` so a crash never leaves a
half-written index under the final name. Any problem reading -> ``IndexFileError`` naming the file.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import faiss
import numpy as np

from . import factory
from .errors import IndexFileError
from .factory import IndexParams
from .item_index import ItemIndex

log = logging.getLogger(__name__)

MAGIC = b"STRMIDX1"
FORMAT = 1


def save(index: ItemIndex, path) -> Path:
    path = Path(path)
    with index._lock.read():
        n = index._n_labels
        meta = {
            "version": index.version, "kind": index.kind, "dim": index.dim,
            "params": dataclasses.asdict(index.params), "effort": index.effort,
            "tuned_recall": index.tuned_recall,
            "ids": index._ids[:n].tolist(),
            "alive": base64.b64encode(index._bitmap[: (n + 7) // 8].tobytes()).decode("ascii"),
        }
        blob = faiss.serialize_index(factory.to_cpu(index._index))
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256()
    digest.update(meta_bytes)
    digest.update(memoryview(blob))
    header = json.dumps({"format": FORMAT, "sha256": digest.hexdigest(),
                         "body_len": len(meta_bytes) + len(blob), "meta_len": len(meta_bytes)}).encode()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(meta_bytes)
        f.write(memoryview(blob))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    log.info("saved index version %d (%d items) to %s", index.version, len(index), path)
    return path


def load(path, *, use_gpu: bool | None = None, device: int = 0, backend: str | None = None) -> ItemIndex:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IndexFileError(path, f"cannot read: {e.strerror or e}") from e
    if len(data) < 16 or data[:8] != MAGIC:
        raise IndexFileError(path, "not a StreamRec index file (bad magic) or truncated")
    (hlen,) = struct.unpack("<Q", data[8:16])
    if 16 + hlen > len(data):
        raise IndexFileError(path, f"truncated: header needs {hlen} bytes, file has {len(data) - 16}")
    try:
        header = json.loads(data[16:16 + hlen])
        body_len, meta_len, want = int(header["body_len"]), int(header["meta_len"]), header["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexFileError(path, f"corrupted header: {e}") from e
    if header.get("format") != FORMAT:
        raise IndexFileError(path, f"unsupported format {header.get('format')!r}")
    body = memoryview(data)[16 + hlen:]
    if len(body) != body_len:
        what = "truncated" if len(body) < body_len else "trailing bytes"
        raise IndexFileError(path, f"{what}: body is {len(body)} bytes, header says {body_len}")
    if hashlib.sha256(body).hexdigest() != want:
        raise IndexFileError(path, "checksum mismatch (sha256): file is corrupted")
    try:
        meta = json.loads(bytes(body[:meta_len]))
        cpu_index = faiss.deserialize_index(np.frombuffer(body[meta_len:], dtype=np.uint8))
        ids = meta["ids"]
        alive = np.unpackbits(np.frombuffer(base64.b64decode(meta["alive"]), np.uint8),
                              bitorder="little")[: len(ids)].astype(bool)
        params = IndexParams(**meta["params"])
    except Exception as e:  # a valid checksum over bad content: written by something else
        raise IndexFileError(path, f"unreadable content: {e}") from e
    backend = factory.resolve_backend(backend, use_gpu) if meta["kind"] == "flat" else "faiss"
    if backend == "torch":
        from .torch_flat import TorchFlatIP, default_device
        index, res = TorchFlatIP(meta["dim"], default_device(device), cpu_index.reconstruct_n(0, len(ids))), None
        on_gpu = False  # FAISS's placement; ItemIndex reads a torch store's device from the store
    else:
        on_gpu = factory.resolve_gpu(use_gpu) and meta["kind"] != "hnsw"
        index, res = (factory.to_gpu(cpu_index, device) if on_gpu else (cpu_index, None))
    out = ItemIndex(faiss_index=index, kind=meta["kind"], dim=meta["dim"], version=meta["version"],
                    params=params, effort=meta["effort"],
                    on_gpu=on_gpu, gpu_res=res, ids=ids, alive=alive,
                    tuned_recall=meta.get("tuned_recall", 1.0), backend=backend)
    log.info("loaded index version %d (%d items) from %s", out.version, len(out), path)
    return out

"""Files that survive a crash: atomic writes, checked safetensors reads, and a one-writer lock."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from circuitpath.errors import CheckpointError, RunError

if TYPE_CHECKING:
    import torch

#: Metadata key that stores a checksum of the tensor bytes, so corruption is detected on load.
CHECKSUM_KEY = "sha256"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path} is not valid JSON ({error})") from None


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over metadata, names, dtypes, shapes and bytes: any change to what loads changes it."""
    import torch

    items = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        items[name] = (str(tensor.dtype), list(tensor.shape), data)
    return _digest_of(items, metadata)


def _digest_of(items: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(k for k in metadata if k != CHECKSUM_KEY):
        digest.update(f"{key}={metadata[key]};".encode())
    for name in sorted(items):
        dtype, shape, data = items[name]
        digest.update(name.encode())
        digest.update(dtype.encode() + str(shape).encode())
        digest.update(data)
    return digest.hexdigest()


#: safetensors' dtype codes as torch names them (what the checksum hashes).
_DTYPES = {"F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16", "BF16": "torch.bfloat16",
           "I64": "torch.int64", "I32": "torch.int32", "I16": "torch.int16", "I8": "torch.int8",
           "U8": "torch.uint8", "BOOL": "torch.bool"}


def verify_tensors(path: Path) -> None:
    """Check a file written by `save_tensors` against its checksum from its raw bytes, without torch;
    CheckpointError if it is missing, truncated or altered."""
    path = Path(path)
    raw = _read_raw(path)
    try:
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        metadata = header.pop("__metadata__", None) or {}
        start = 8 + header_len
        items = {}
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if not 0 <= begin <= end <= len(raw) - start:
                raise ValueError(f"{name} lies past the end of the file")
            items[name] = (_DTYPES[entry["dtype"]], list(entry["shape"]), raw[start + begin:start + end])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is truncated or corrupted ({error})") from None
    if metadata.get(CHECKSUM_KEY) != _digest_of(items, metadata):
        raise CheckpointError(f"{path} is corrupted (its checksum does not match its contents)")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save tensors atomically as safetensors, with a checksum of their bytes in the metadata."""
    from safetensors.torch import save as save_safetensors_bytes

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    meta = {key: str(value) for key, value in metadata.items()}
    meta[CHECKSUM_KEY] = _digest(tensors, meta)
    write_atomic(Path(path), _ordered_metadata(save_safetensors_bytes(tensors, metadata=meta)))


def _ordered_metadata(raw: bytes) -> bytes:
    """The same safetensors file with its metadata keys sorted: the library writes them in a
    hash-map order that changes from process to process, so equal content gave unequal bytes."""
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps({"__metadata__": header.pop("__metadata__"), **header}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data that follows to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + header_len :]


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file written by `save_tensors`; refuse a missing, truncated or altered one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors_bytes

    path = Path(path)
    raw = _read_raw(path)
    try:
        tensors = load_safetensors_bytes(raw)
        metadata = _read_metadata(raw)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as error:
        raise CheckpointError(f"{path} is truncated or corrupted ({error})") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is None or expected != _digest(tensors, metadata):
        raise CheckpointError(f"{path} is corrupted (its checksum does not match its contents)")
    return tensors, metadata


def _read_raw(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None


def _read_metadata(raw: bytes) -> dict[str, str]:
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a mapping")
    return metadata


class RunLock:
    """An exclusive lock on a run directory, released by the kernel if the process dies."""

    FILE = ".lock"

    def __init__(self, directory: Path):
        self.path = Path(directory) / self.FILE
        self._handle = None

    def acquire(self) -> RunLock:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunError(f"{self.path.parent} is being written by {owner}; wait for it or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def is_held(self) -> bool:
        """Whether some process holds the lock now (checked without writing anything)."""
        try:
            handle = open(self.path)
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

"""Extracting a ``git archive`` tar into a directory, refusing unsafe paths and oversized trees."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from fleet.sources.git.errors import GitExportError

MAX_EXPORT_BYTES = 512 * 1024 * 1024  # an exported tree larger than this is refused
MAX_EXPORT_FILES = 100_000


def check_relative(path: str) -> None:
    """Refuse an export path that is absolute or contains ``..``."""
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts:
        raise GitExportError(f"path {path!r} must be relative to the repository root without '..'")


def extract_tar(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Extract a ``git archive`` tar into ``dest``: no absolute or ``..`` paths, parents inside ``dest``,
    at most ``MAX_EXPORT_FILES`` entries and ``max_bytes`` of file content; symlinks kept as symlinks."""
    total = 0
    count = 0
    dest_resolved = dest.resolve()
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            if member.type == tarfile.XGLTYPE or member.type == tarfile.XHDTYPE:
                continue
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise GitExportError(f"unsafe path in archive: {member.name!r}")
            count += 1
            if count > MAX_EXPORT_FILES:
                raise GitExportError(f"tree has more than {MAX_EXPORT_FILES} entries")
            target = dest.joinpath(*name.parts)
            # parents must be real directories inside dest (git trees never put files under a symlink)
            parent = target.parent
            real_parent = parent.resolve()
            if real_parent != dest_resolved and dest_resolved not in real_parent.parents:
                raise GitExportError(f"unsafe path in archive: {member.name!r}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.issym():
                parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
            elif member.isreg():
                total += member.size
                if total > max_bytes:
                    raise GitExportError(f"tree is larger than {max_bytes} bytes")
                parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise GitExportError(f"cannot read {member.name!r} from the archive")
                with src, open(target, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
                os.chmod(target, mode)
            # other entry types (hardlinks, devices) are never produced by git archive: skip

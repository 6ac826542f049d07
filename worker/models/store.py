"""Check a model folder against the manifest cheaply: sizes by ``stat``, sha256 digests only when
asked for.

Example::

    from worker.models.store import verify
    report = verify(Path("models"))
    report.complete, report.missing_paths
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from worker.models.fetch import sha256_of
from worker.models.manifest import FETCH_COMMAND, INSTANTID_MANIFEST, OPTIONAL_SOURCES, ExpectedFile, Manifest

Status = Literal["ok", "missing", "wrong_size", "wrong_checksum"]


@dataclass(frozen=True)
class FileCheck:
    expected: ExpectedFile
    path: Path
    status: Status
    found_size: int | None = None
    found_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.expected.source,
            "path": str(self.path),
            "relative_path": self.expected.path,
            "status": self.status,
            "expected_size": self.expected.size,
            "found_size": self.found_size,
            "expected_sha256": self.expected.sha256,
            "found_sha256": self.found_sha256,
        }


@dataclass(frozen=True)
class VerifyReport:
    model_dir: Path
    checks: tuple[FileCheck, ...]
    checksums: bool = False
    sources: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def missing_paths(self) -> list[Path]:
        """Every expected file that is absent or unusable (wrong size or checksum)."""
        return [check.path for check in self.checks if not check.ok]

    def summary(self) -> str:
        """One sentence a person can act on, naming the fetch command when files are missing."""
        if self.complete:
            return f"All {len(self.checks)} model files are in place in {self.model_dir}."
        bad = self.missing_paths
        shown = ", ".join(str(path) for path in bad[:3]) + (" ..." if len(bad) > 3 else "")
        optional = sorted({c.expected.source for c in self.checks if not c.ok} & set(OPTIONAL_SOURCES))
        with_parts = f" --with {','.join(optional)}" if optional else ""
        return (
            f"{len(bad)} of {len(self.checks)} model files are missing or damaged in "
            f"{self.model_dir} ({shown}). Fetch them with: {FETCH_COMMAND} --model-dir {self.model_dir}{with_parts}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "complete": self.complete,
            "checksums": self.checksums,
            "files": [check.to_dict() for check in self.checks],
        }


def check_file(model_dir: Path, expected: ExpectedFile, checksums: bool = False) -> FileCheck:
    """Stat one expected file; hash it only when ``checksums`` and a digest is on record."""
    path = Path(model_dir) / expected.path
    if not path.is_file():
        return FileCheck(expected, path, "missing")
    size = path.stat().st_size
    size_ok = size == expected.size if expected.size is not None else size > 0
    if not size_ok:
        return FileCheck(expected, path, "wrong_size", size)
    if checksums and expected.sha256 is not None:
        digest = sha256_of(path)
        if digest != expected.sha256:
            return FileCheck(expected, path, "wrong_checksum", size, digest)
        return FileCheck(expected, path, "ok", size, digest)
    return FileCheck(expected, path, "ok", size)


def verify(
    model_dir: Path,
    *,
    checksums: bool = False,
    manifest: Manifest | None = None,
    only: Iterable[str] | None = None,
    extra: Iterable[ExpectedFile] = (),
) -> VerifyReport:
    """Check every expected file of the model folder. Cheap: one ``stat`` per file by default.

    Example::

        report = verify(Path("models"))
        if not report.complete:
            print(report.summary())
    """
    chosen = (manifest or INSTANTID_MANIFEST).select(only)
    expected = (*chosen.expected_files(), *extra)   # extra: the added base checkpoints' files
    checks = tuple(check_file(model_dir, e, checksums) for e in expected)
    return VerifyReport(Path(model_dir), checks, checksums, chosen.keys)



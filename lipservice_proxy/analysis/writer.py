"""Writing a generated policy: atomically, with the previous versions kept in `history/`.

The new text goes to a temporary file in the target's directory, is fsynced, and replaces the
target with os.replace, so a reader (the policy store, another replica, an operator's `cat`) sees
the old file or the new one, never half of either. Before that, the file being replaced is copied
to `<dir>/history/<name>.v<version>.<UTC time>.yaml`; only the newest `keep` copies stay.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from ..files import write_atomically
from ..sampling.policy import Policy, dump_policy

_VERSION = re.compile(rb"^version:\s*(\d+)", re.MULTILINE)  # a top-level key, near the top of the file
GENERATED_HEADER = (
    "# Written by the lipservice-proxy analysis loop; the previous versions are in history/.\n"
    "# To override it, write a policy with a higher version to the operator's policy file.\n"
)


class PolicyWriter:
    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.history_dir = path.parent / "history"
        self._keep = keep
        self._history_name = re.compile(rf"^{re.escape(path.stem)}\.v(\d+)\.[0-9TZ]+\.yaml$")

    def existing_version(self) -> int:
        """The version of the file there now (0 when missing or without one), read without parsing it all."""
        try:
            with self.path.open("rb") as handle:
                head = handle.read(4096)
        except OSError:
            return 0
        match = _VERSION.search(head)
        return int(match.group(1)) if match else 0

    def write(self, policy: Policy) -> Path:
        """Write `policy`; raises OSError when the directory is not writable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._keep > 0 and self.path.exists():
            self._archive()
        write_atomically(self.path, (GENERATED_HEADER + dump_policy(policy)).encode())
        return self.path

    def _archive(self) -> None:
        version = self.existing_version()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.history_dir.mkdir(exist_ok=True)
        shutil.copy2(self.path, self.history_dir / f"{self.path.stem}.v{version}.{stamp}.yaml")
        self._prune()

    def history(self) -> list[Path]:
        """History files, oldest first."""
        if not self.history_dir.is_dir():
            return []
        found = []
        for path in self.history_dir.iterdir():
            match = self._history_name.match(path.name)
            if match:
                found.append((int(match.group(1)), path.name, path))
        return [path for _, _, path in sorted(found)]

    def _prune(self) -> None:
        files = self.history()
        for path in files[: max(0, len(files) - self._keep)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

"""Counting totals kept across restarts: a small JSON file per device, ``<state folder>/<device>.totals.json``.

It holds each camera's line and zone totals (``Counter.totals``), written atomically (a temporary file renamed
over the old one), so a process killed mid-write leaves the previous totals, never half a file. A reconnecting
camera keeps its totals without it (its counter lives on); a restarted process reads them back.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("edgecv.state")
SCHEMA = "edgecv.totals/1"


def default_state_dir(configured: Path | None, outbox: Path | None) -> Path:
    """``state`` if set, else the outbox's folder (the component's work folder under Greengrass), else
    ~/.cache/edgecv/state."""
    if configured:
        return Path(configured)
    return Path(outbox) if outbox else Path.home() / ".cache" / "edgecv" / "state"


class TotalsFile:
    def __init__(self, folder: Path, device: str):
        self.path = Path(folder) / f"{device}.totals.json"
        self.device = device

    def load(self) -> dict[str, dict]:
        """Camera name -> totals; empty if there is no file yet. A file that can't be read is set aside (renamed
        ``.bad``) with a warning: counting starts again from zero rather than not at all."""
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("schema") != SCHEMA or not isinstance(data.get("cameras"), dict):
                raise ValueError(f"not an {SCHEMA} file")
            return data["cameras"]
        except (OSError, ValueError, AttributeError) as exc:
            bad = self.path.with_suffix(".json.bad")
            log.warning("can't read the totals in %s (%s); set aside as %s, counting from zero", self.path, exc, bad)
            os.replace(self.path, bad)
            return {}

    def save(self, cameras: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema": SCHEMA, "device": self.device, "cameras": cameras}, sort_keys=True))
        os.replace(tmp, self.path)

"""The points of a sweep: one head per point, each saved as JSON as soon as it is scored.

``Points(folder, head, ...)`` keeps ``folder/points/<point>.json`` holding the point's row (its
swept values and scores, or the error that made it fail) and a fingerprint of everything it
depends on (the head config and the stores' fingerprints): a rerun skips finished points and
recomputes changed ones. ``context`` is a digest of what the points of one sweep share (the
upstream models, the clips, the other options): ``rows`` returns every saved point of the
current context, so a full sweep after a smaller one (or the reverse) shows them all.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from bow.heads.protocols import run_protocol
from bow.io.featureset import load_features
from bow.io.stage import digest, write_json
from bow.io.store import store_fingerprint

SCORES = ("map", "map_std", "chunk_map", "chunk_map_std", "d_prime", "mean_auc", "accuracy",
          "best_epoch", "epochs", "n_train_clips", "n_eval_clips", "protocol")


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class Points:
    """The points of one sweep in ``folder`` (module docstring): heads of config ``head``
    (bow.heads.model.HeadConfig) scored by ``protocol``; ``order`` sorts categorical values
    (e.g. scene algorithms in the paper's order)."""

    def __init__(self, folder: Path, head, device: str, progress: bool, log,
                 protocol: str = "auto", order=()):
        self.folder, self.head, self.device, self.progress, self.log = \
            Path(folder) / "points", head, device, progress, log
        self.protocol = protocol
        self.order = {name: i for i, name in enumerate(order)}
        self.context = ""

    def _load(self, point: str, fingerprint: str) -> dict | None:
        try:
            saved = json.loads((self.folder / f"{point}.json").read_text())
        except (OSError, ValueError):
            return None
        return saved["row"] if saved.get("fingerprint") == fingerprint else None

    def _keep(self, point: str, fingerprint: str, row: dict) -> dict:
        write_json(self.folder / f"{point}.json",
                   {"fingerprint": fingerprint, "context": self.context, "row": row})
        return row

    def score(self, point: str, params: dict, stores: list[Path], **head_changes) -> dict:
        """Train and score one head on ``stores`` (or reuse the saved point)."""
        head = dataclasses.replace(self.head, **head_changes)
        inputs = [[p.name, store_fingerprint(p, required=True)] for p in stores]
        fingerprint = digest({"head": head, "stores": inputs})
        row = self._load(point, fingerprint)
        if row is not None:
            self.log(f"  {point}: done before, mAP {row['map']:.4f}")
            return row
        start = time.perf_counter()
        result = run_protocol(load_features(stores), head, self.protocol, self.device,
                              self.progress)
        row = {"point": point, **params, **{k: _finite(result.get(k)) for k in SCORES},
               "seconds": round(time.perf_counter() - start, 2)}
        self.log(f"  {point}: mAP {row['map']:.4f} ({row['seconds']:.0f} s)")
        return self._keep(point, fingerprint, row)

    def failed_before(self, point: str, fingerprint: str) -> bool:
        """True when ``point`` failed before with this fingerprint (it is not retried)."""
        row = self._load(point, fingerprint)
        return row is not None and "error" in row

    def failed(self, point: str, params: dict, fingerprint: str, error: str) -> dict:
        """Record a point that cannot be computed (kept, so a rerun does not retry it)."""
        self.log(f"  {point}: failed: {error}")
        return self._keep(point, fingerprint, {"point": point, **params, "error": error})

    def rows(self, keys) -> list[dict]:
        """Every saved point of the current context, sorted by ``keys``."""
        rows = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if saved.get("context") == self.context:
                rows.append(saved["row"])
        return sorted(rows, key=lambda r: tuple(self.order.get(r.get(k), r.get(k))
                                                for k in keys))

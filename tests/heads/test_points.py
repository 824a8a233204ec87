"""bow.heads.points: sweep points are kept, skipped when unchanged and redone when changed."""
import json

from bow.heads.model import HeadConfig
from bow.heads.points import Points
from tests.heads_data import one_torch_thread, synthetic_counts, write_store  # noqa: F401


def test_points_are_kept_skipped_and_redone_when_changed(tmp_path, counting):
    clips, vocabulary, vectors = synthetic_counts(24, 3, ["train", "val", "eval"])
    store = write_store(tmp_path / "bow.h5", clips, vocabulary, vectors, "bow")
    head = HeadConfig(max_epochs=3, width=16)
    log = []
    points = Points(tmp_path / "s", head, "cpu", False, log.append)
    points.context = "A"
    first = points.score("p0", {"mask_p": 0.0}, [store], mask_p=0.0)
    assert 0 < first["map"] <= 1 and first["protocol"] == "splits" and len(counting) == 1
    saved = json.loads((tmp_path / "s" / "points" / "p0.json").read_text())
    assert saved["row"] == first and saved["context"] == "A"
    assert points.score("p0", {"mask_p": 0.0}, [store], mask_p=0.0) == first
    assert len(counting) == 1 and "p0: done before" in log[-1]
    points.score("p0", {"mask_p": 0.0}, [store], mask_p=0.0, width=8)     # other head: redone
    assert len(counting) == 2 and counting[-1].width == 8
    points.failed("p9", {"mask_p": 0.9}, "key", "cannot")
    assert points.failed_before("p9", "key") and not points.failed_before("p9", "other")
    assert [r["point"] for r in points.rows(("mask_p",))] == ["p0", "p9"]
    points.context = "B"                                   # other upstream: not shown
    assert points.rows(("mask_p",)) == []

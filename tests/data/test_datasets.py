"""bow.data.datasets: both layouts on the shared data, invalid rows, layout errors."""
import pytest

from bow.data.datasets import DatasetError, load_dataset


def test_labels_csv_layout(esc10_dir):
    ds = load_dataset(esc10_dir)
    assert ds.layout == "labels_csv" and len(ds.clips) == 400 and len(ds.vocabulary) == 10
    assert ds.splits == ["1", "2", "3", "4", "5"]
    assert len(ds.select(["1", "2"])) == 160
    assert all(c.path.is_file() for c in ds.clips[:20])


def test_fsd50k_layout(fsd50k_mini_dir):
    ds = load_dataset(fsd50k_mini_dir)
    assert ds.layout == "fsd50k" and len(ds.vocabulary) == 23 and not ds.invalid
    assert len(ds.clips) == 400 and set(ds.splits) == {"train", "val", "eval"}
    assert len(ds.select(["eval"])) == 80
    multi = [c for c in ds.clips if len(c.labels) > 1]
    assert multi and all(c.path.suffix == ".wav" and c.path.is_file() for c in ds.clips)


def test_unknown_labels_and_duplicates_are_reported(tmp_path):
    gt = tmp_path / "FSD50K.ground_truth"
    gt.mkdir()
    (gt / "vocabulary.csv").write_text("0,Dog,/m/0\n1,Cat,/m/1\n")
    (gt / "dev.csv").write_text("fname,labels,mids,split\n1,Dog,x,train\n2,\"Dog,Bird\",x,val\n"
                                "1,Cat,x,train\n")
    (gt / "eval.csv").write_text("fname,labels,mids\n3,Cat,x\n")
    ds = load_dataset(tmp_path)
    assert [c.fname for c in ds.clips] == ["1", "3"]
    reasons = dict(ds.invalid)
    assert "Bird" in reasons["2"] and "duplicate" in reasons["1"]


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("name,label\nx,y\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset(tmp_path)

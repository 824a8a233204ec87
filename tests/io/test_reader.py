"""bow.io.reader: lazy slices of a store written by the pipeline equal the whole-store read."""
import h5py
import numpy as np
import pytest

from bow.io.reader import ChunkMatrix, Rows, _File, open_store, read_rows
from bow.io.store import StoreError, read
from pipelines import embed_kwmlp


@pytest.fixture(scope="module")
def kwmlp_store(fsd50k_mini_dir, kwmlp_dir, tmp_path_factory):
    """A KW-MLP store (clips, chunks, frames) of 6 FSD50K-mini clips, written by the stage."""
    root = tmp_path_factory.mktemp("reader_data")
    (root / "audio").mkdir()
    rows = ["fname,labels,split"]
    for i, src in enumerate(sorted((fsd50k_mini_dir / "FSD50K.dev_audio").glob("*.wav"))[:6]):
        (root / "audio" / src.name).symlink_to(src)
        rows.append(f"{src.name},{'a' if i % 2 else 'b'},{'train' if i < 4 else 'eval'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    config = embed_kwmlp.EmbedKWMLPConfig(checkpoint=str(kwmlp_dir / "kwmlp.pth"))
    return embed_kwmlp.run(root, tmp_path_factory.mktemp("reader_art"), config, "cpu",
                           progress=False)


def test_lazy_slices_equal_the_whole_store(kwmlp_store):
    whole = read(kwmlp_store)
    with open_store(kwmlp_store) as s:
        assert len(s) == 6 and s.vocabulary == whole.vocabulary and s.attrs["kind"] == "kwmlp"
        np.testing.assert_array_equal(s.fname, whole.fname)
        np.testing.assert_array_equal(s.labels, whole.labels)
        np.testing.assert_array_equal(s.offsets, whole.offsets)
        np.testing.assert_array_equal(s.clips[2:5], whole.clips[2:5])
        np.testing.assert_array_equal(s.clips[3], whole.clips[3])
        assert s.chunks.shape == whole.chunks.shape and s.chunks.dtype == whole.chunks.dtype
        for i in range(len(s)):
            np.testing.assert_array_equal(s.chunks_of(i), whole.chunk_vectors(i))
            frames, stamps = s.frames_of(i)
            a, b = whole.frame_offsets[i], whole.frame_offsets[i + 1]
            np.testing.assert_array_equal(frames, whole.frames[a:b])
            np.testing.assert_array_equal(stamps, whole.timestamps[a:b])
        rows = np.array([7, 0, 7, len(whole.chunks) - 1])
        np.testing.assert_array_equal(s.chunks[rows], whole.chunks[rows])
        np.testing.assert_array_equal(s.chunks[rows, :5], whole.chunks[rows, :5])
        view = s.chunks.take(np.arange(len(whole.chunks))[::-1])
        np.testing.assert_array_equal(view[2:6], whole.chunks[::-1][2:6])
        np.testing.assert_array_equal(np.asarray(view), whole.chunks[::-1])


def test_chunk_matrix_joins_parts_row_aligned(kwmlp_store):
    whole = read(kwmlp_store).chunks
    with open_store(kwmlp_store) as s:
        reverse = np.arange(len(whole))[::-1]
        joined = ChunkMatrix([s.chunks, s.chunks.take(reverse)])
        assert joined.shape == (len(whole), 2 * whole.shape[1]) and joined.dtype == np.float32
        np.testing.assert_array_equal(joined[3:9], np.concatenate([whole, whole[::-1]], 1)[3:9])
        picked = joined.take([5, 1])
        np.testing.assert_array_equal(np.asarray(picked)[:, :whole.shape[1]], whole[[5, 1]])


def test_read_rows_reads_runs_of_chunks_in_any_order(tmp_path):
    data = np.arange(1000 * 3).reshape(1000, 3).astype(np.int32)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("x", data=data, chunks=(16, 3), compression="gzip")
    rows = np.random.default_rng(0).integers(0, 1000, 300)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(read_rows(f["x"], rows), data[rows])
        assert read_rows(f["x"], []).shape == (0, 3)
    view = Rows(_File(tmp_path / "d.h5"), "x")
    np.testing.assert_array_equal(view[data[:, 0] % 2 == 0], data[data[:, 0] % 2 == 0])
    np.testing.assert_array_equal(view[-1], data[-1])


def test_open_store_errors_name_the_file(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        open_store(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(StoreError, match="other.h5: not a bow feature store"):
        open_store(tmp_path / "other.h5")

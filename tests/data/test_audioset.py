"""The AudioSet layout (bow.data.audioset) on a tiny generated tree: Google's CSV format with its
comment lines, quoted label lists and display names with commas; missing files; bad rows; and the
bag-of-words stages run on it."""
import dataclasses

import numpy as np
import pytest
import soundfile as sf

from bow.data.datasets import DatasetError, load_dataset
from bow.data.synth import CLASSES, render_clip
from bow.io.store import read
from pipelines import embed, fit_codebooks, train_autoencoders
from pipelines.embed import EmbedConfig
from tests.pipelines.test_bow_stages import CODES, TRAIN

CLASS_ROWS = [("0", "/m/09x0r", "Speech"), ("1", "/m/05zppz", "Male speech, man speaking"),
              ("2", "/m/0jbk", "Animal"), ("3", "/m/04rlf", "Music")]
HEADER = ['# Segments csv created Sun Mar  5 10:54:31 2017',
          '# num_ytids=4, num_segs=4, num_unique_labels=4, num_positive_labels=6',
          '# YTID, start_seconds, end_seconds, positive_labels']
# (csv stem, YTID, labels, file name or None for a missing file)
SEGMENTS = [
    ("balanced_train_segments", "--PJHxphWEs", "/m/09x0r,/m/05zppz", "Y--PJHxphWEs.wav"),
    ("balanced_train_segments", "-0RWZT-miFs", "/m/0jbk", "Y-0RWZT-miFs.flac"),
    ("balanced_train_segments", "-1nilez17Dg", "/m/04rlf", "-1nilez17Dg.wav"),     # no Y
    ("balanced_train_segments", "-2PDE7hUArE", "/m/0jbk,/m/04rlf", "Y-2PDE7hUArE.wav"),
    ("balanced_train_segments", "missing0001", "/m/09x0r", None),
    ("balanced_train_segments", "badlabel001", "/m/0nope", "Ybadlabel001.wav"),
    ("unbalanced_train_segments", "-5QrBL6MzLg", "/m/09x0r", "Y-5QrBL6MzLg.wav"),
    ("unbalanced_train_segments", "-5xOcMJtv4g", "/m/04rlf", "Y-5xOcMJtv4g.wav"),
    ("unbalanced_train_segments", "--PJHxphWEs", "/m/09x0r", "Y--PJHxphWEs.wav"),  # listed
    ("unbalanced_train_segments", "-6Fd4EGxNHs", "/m/0jbk", "Y-6Fd4EGxNHs.wav"),
    ("eval_segments", "--4gqARaEJE", "/m/0jbk,/m/09x0r", "Y--4gqARaEJE.wav"),
    ("eval_segments", "--BfvyPmVMo", "/m/04rlf", "Y--BfvyPmVMo.wav"),
    ("eval_segments", "--U7joUcTCo", "/m/05zppz", "Y--U7joUcTCo.wav"),
    ("eval_segments", "missing0002", "/m/04rlf", None),
]


def write_audioset(root, segments=SEGMENTS, seconds=1.6):
    """A tiny AudioSet-layout tree under ``root``: the four CSVs and generated audio."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{d}"\n' for i, m, d in CLASS_ROWS))
    rng = np.random.default_rng(0)
    for stem in ("balanced_train_segments", "unbalanced_train_segments", "eval_segments"):
        rows = [s for s in segments if s[0] == stem]
        lines = HEADER + [f'{ytid}, 30.000, {30 + seconds:.3f}, "{labels}"'
                          for _, ytid, labels, _ in rows]
        (root / f"{stem}.csv").write_text("\n".join(lines) + "\n")
        (root / "audio" / stem).mkdir(parents=True, exist_ok=True)
        for i, (_, _, _, name) in enumerate(rows):
            if name:
                audio = render_clip(rng, [CLASSES[i % len(CLASSES)]], seconds)
                sf.write(root / "audio" / stem / name, audio, 16000)
    return root


def test_audioset_layout_is_detected_and_read(tmp_path):
    root = write_audioset(tmp_path / "audioset")
    ds = load_dataset(root)
    assert ds.layout == "audioset"
    assert ds.vocabulary == ["Speech", "Male speech, man speaking", "Animal", "Music"]
    assert ds.splits == ["balanced_train", "eval", "unbalanced_train"]
    by_name = {c.fname: c for c in ds.clips}
    assert sorted(by_name) == sorted({s[1] for s in SEGMENTS} - {"missing0001", "missing0002",
                                                                   "badlabel001"})
    assert by_name["--PJHxphWEs"].labels == ("Speech", "Male speech, man speaking")
    assert by_name["--PJHxphWEs"].split == "balanced_train"          # the first listing wins
    assert by_name["-0RWZT-miFs"].path.suffix == ".flac"
    assert by_name["-1nilez17Dg"].path.name == "-1nilez17Dg.wav"
    assert by_name["--4gqARaEJE"].split == "eval"
    reasons = dict((f, r) for f, r in ds.invalid if f != "--PJHxphWEs")
    assert set(reasons) == {"missing0001", "missing0002", "badlabel001"}
    assert "no audio file" in reasons["missing0001"] and "30-31.6 s" in reasons["missing0001"]
    assert "/m/0nope" in reasons["badlabel001"] and "line 9" in reasons["badlabel001"]
    duplicate = [r for f, r in ds.invalid if f == "--PJHxphWEs"]
    assert duplicate == ["unbalanced_train_segments.csv line 6: already listed in "
                         "balanced_train_segments.csv"]
    for c in ds.clips:
        assert sf.info(str(c.path)).frames > 0


def test_a_segment_csv_without_its_audio_folder_is_one_invalid_entry(tmp_path):
    root = write_audioset(tmp_path / "audioset")
    for p in (root / "audio" / "unbalanced_train_segments").iterdir():
        p.unlink()
    (root / "audio" / "unbalanced_train_segments").rmdir()
    ds = load_dataset(root)
    assert "unbalanced_train" not in ds.splits
    folder = root / "audio" / "unbalanced_train_segments"
    assert ("unbalanced_train_segments.csv",
            f"no audio folder {folder}: its 4 segments left out") in ds.invalid


@pytest.mark.parametrize("line, message", [
    ("abc, 30.000, 40.000", "line 4: expected YTID"),
    ('abc, thirty, 40.000, "/m/09x0r"', "line 4: start/end seconds are not numbers"),
])
def test_a_malformed_row_names_the_file_and_line(tmp_path, line, message):
    root = write_audioset(tmp_path / "audioset")
    path = root / "eval_segments.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [line] + lines[3:]) + "\n")
    with pytest.raises(DatasetError, match=f"eval_segments.csv, {message}"):
        load_dataset(root)


def test_a_bad_class_list_names_the_file(tmp_path):
    root = write_audioset(tmp_path / "audioset")
    (root / "class_labels_indices.csv").write_text("index,mid\n0,/m/09x0r\n")
    with pytest.raises(DatasetError, match="class_labels_indices.csv: missing column"):
        load_dataset(root)


@pytest.mark.slow
def test_the_bag_of_words_stages_run_on_the_audioset_layout(tmp_path):
    root = write_audioset(tmp_path / "audioset")
    art = tmp_path / "artifacts"
    splits = ("balanced_train", "unbalanced_train")
    train_autoencoders.run(root, art, dataclasses.replace(TRAIN, train_splits=splits),
                           device="cpu", progress=False)
    codes = dataclasses.replace(CODES, n_codes=4, level_bins=4, frame_codes=16,
                                train_splits=splits)
    fit_codebooks.run(root, art, codes, device="cpu", progress=False)
    store = read(embed.run(root, art, EmbedConfig(), device="cpu", progress=False))
    ds = load_dataset(root)
    assert store.vocabulary == ds.vocabulary                 # display names in the reports
    assert list(store.fname) == [c.fname for c in ds.clips]
    assert sorted(store.skipped) == sorted(ds.invalid)       # missing files: listed, not fatal
    row = list(store.fname).index("--PJHxphWEs")
    assert [store.vocabulary[j] for j in np.flatnonzero(store.labels[row])] == \
        ["Speech", "Male speech, man speaking"]
    assert sorted(set(store.split)) == ["balanced_train", "eval", "unbalanced_train"]

"""A corpus of bad and awkward inputs, with what a robust reader must do with each.

``make_bad_corpus(root)`` writes one file per case below (plus ``n_good`` ordinary clips so that
fitting stages have data) as a dataset in the labels.csv layout (``audio/`` + ``labels.csv``,
split train / val / eval) or, with ``layout="fsd50k"``, in the FSD50K release layout, and
returns ``{fname: Expectation}``: "ok" (must be embedded; ``samples`` is the length of the
16 kHz audio ``bow.audio.load.read_audio`` returns) or "skip" (must be skipped, with a reason
containing ``reason``). The same mapping is saved as ``root/expectations.json``.

=============================  ======  =============================================
case (fname)                   must    why / how it is made
=============================  ======  =============================================
truncated_pcm16.wav            ok      PCM16 WAV cut to half its bytes: frames present are read
truncated.flac                 skip    FLAC cut in half: the decoder loses sync
truncated.ogg                  skip    Ogg Vorbis cut in half: malformed stream
broken_header.wav              skip    the first 30 bytes of a WAV (no data chunk)
zero_bytes.wav                 skip    an empty file
zero_frames.wav                skip    a valid WAV header holding 0 frames
not_audio.wav                  skip    a text file named .wav
random_bytes.flac              skip    random bytes named .flac
nan_samples.wav                skip    float WAV with NaN samples
inf_samples.wav                skip    float WAV with an Inf sample
silent.wav                     ok      1 s of digital silence (valid audio)
short_20ms.wav                 ok      20 ms, shorter than one 30 ms window: one padded chunk
single_sample.wav              ok      one sample
long_noise.flac                ok      ``long_seconds`` (600) of low-level noise, 8 kHz FLAC
pcm_u8.wav / pcm_24.wav / pcm_32.wav / float32.wav / float64.wav
                               ok      the reference tone in each sample format
loud_float.wav                 ok      float WAV peaking at 2.0: not clipped, kept as stored
rate_8k.wav / rate_44k1.wav / rate_96k.wav
                               ok      the reference tone at each rate, resampled to 16 kHz
odd_rate_44101.wav             skip    a rate coprime with 16000: unsupported sample rate
six_channels.wav               ok      6 channels whose average is the reference tone
non_ascii_café_日本語.wav       ok      non-ASCII file name
flac_named.wav                 ok      FLAC content behind a .wav extension
vorbis.ogg / mpeg.mp3          ok      lossy codecs (only if this libsndfile can write them)
missing_file.wav               skip    named in the labels file, absent on disk
oov_label.wav                  skip    fsd50k layout only: a label outside vocabulary.csv
=============================  ======  =============================================

The labels.csv layout derives its vocabulary from labels.csv itself, so "labels outside the
vocabulary" exists only in the FSD50K layout. The "reference tone" is ``reference_tone()``:
440 Hz, amplitude 0.5, 1 s. Files are the same bytes for the same seed, except the two Ogg
ones (libsndfile gives each Ogg stream a random serial number).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from bow.data.synth import mid, render_clip, write_fsd50k_ground_truth

TONE_HZ, TONE_AMPLITUDE, TONE_SECONDS = 440.0, 0.5, 1.0
GOOD_CLASSES = ("Steady_tone", "Noise_burst", "Click_train")
SPLITS = ("train", "val", "eval")
GOOD_SPLITS = ("train", "train", "train", "train", "val", "eval")


@dataclass(frozen=True)
class Expectation:
    """What a robust reader must do with one file of the corpus."""
    case: str                  # what the file exercises
    outcome: str               # "ok" (embedded) or "skip" (skipped with a reason)
    reason: str = ""           # skip: a substring of the reason
    samples: int | None = None  # ok: length of the 16 kHz float32 audio read_audio returns
    tone: bool = False         # ok: the audio is reference_tone() (within the format's precision)


def reference_tone(rate: int = 16_000) -> np.ndarray:
    """(TONE_SECONDS * rate,) float64: 440 Hz sine, amplitude 0.5."""
    t = np.arange(int(round(TONE_SECONDS * rate))) / rate
    return TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)


def _len16k(frames: int, rate: int) -> int:
    return -(-frames * 16_000 // rate)


def _write_files(audio: Path, rng: np.random.Generator, long_seconds: float) -> dict:
    """Write every case into ``audio``; return {fname: Expectation} (missing/oov added later)."""
    tone = reference_tone()
    n = len(tone)
    ex = {}

    def write(name, data, rate, case, subtype="PCM_16", fmt=None, **expect):
        sf.write(str(audio / name), data, rate, subtype=subtype, format=fmt)
        ex[name] = Expectation(case, "ok", samples=_len16k(len(data), rate), **expect)

    def cut(name, source_bytes, case, outcome, reason="", samples=None):
        (audio / name).write_bytes(source_bytes[:len(source_bytes) // 2])
        ex[name] = Expectation(case, outcome, reason, samples)

    write("pcm_u8.wav", tone, 16_000, "8-bit unsigned PCM WAV", "PCM_U8", tone=True)
    write("pcm_24.wav", tone, 16_000, "24-bit PCM WAV", "PCM_24", tone=True)
    write("pcm_32.wav", tone, 16_000, "32-bit PCM WAV", "PCM_32", tone=True)
    write("float32.wav", tone, 16_000, "32-bit float WAV", "FLOAT", tone=True)
    write("float64.wav", tone, 16_000, "64-bit float WAV", "DOUBLE", tone=True)
    write("loud_float.wav", 4 * tone, 16_000, "float WAV peaking at 2.0 (kept, not clipped)",
          "FLOAT")
    for name, rate in (("rate_8k.wav", 8_000), ("rate_44k1.wav", 44_100),
                       ("rate_96k.wav", 96_000)):
        write(name, reference_tone(rate), rate, f"{rate} Hz sample rate", tone=True)
    gains = np.array([0.5, 1.5, 1.0, 1.0, 0.25, 1.75])  # mean 1: the average is the tone
    write("six_channels.wav", tone[:, None] * gains, 16_000, "6-channel audio", tone=True)
    write("non_ascii_café_日本語.wav", tone, 16_000, "non-ASCII file name", tone=True)
    write("flac_named.wav", tone, 16_000, "FLAC content with a .wav extension", fmt="FLAC",
          tone=True)
    write("silent.wav", np.zeros(n), 16_000, "all-silent audio (valid)")
    write("short_20ms.wav", tone[:320], 16_000, "20 ms, shorter than one 30 ms window")
    write("single_sample.wav", tone[1:2], 16_000, "a single sample")
    long_rate = 8_000
    noise = rng.integers(-4, 5, int(long_seconds * long_rate)).astype(np.int16)
    write("long_noise.flac", noise, long_rate, f"{long_seconds / 60:g} min of low-level noise")

    for name, fmt, subtype in (("vorbis.ogg", "OGG", "VORBIS"),
                               ("mpeg.mp3", "MP3", "MPEG_LAYER_III")):
        try:
            write(name, tone, 16_000, f"{fmt} ({subtype}) lossy codec", subtype, fmt, tone=True)
        except (sf.LibsndfileError, ValueError, TypeError):  # this libsndfile cannot write it
            (audio / name).unlink(missing_ok=True)
            ex.pop(name, None)

    nan = tone.astype(np.float32)
    nan[[100, 5000]] = np.nan
    sf.write(str(audio / "nan_samples.wav"), nan, 16_000, subtype="FLOAT")
    ex["nan_samples.wav"] = Expectation("float WAV with NaN samples", "skip", "non-finite")
    inf = tone.astype(np.float32)
    inf[8000] = np.inf
    sf.write(str(audio / "inf_samples.wav"), inf, 16_000, subtype="FLOAT")
    ex["inf_samples.wav"] = Expectation("float WAV with an Inf sample", "skip", "non-finite")
    sf.write(str(audio / "odd_rate_44101.wav"), tone, 44_101, subtype="PCM_16")
    ex["odd_rate_44101.wav"] = Expectation("sample rate coprime with 16000", "skip",
                                           "unsupported sample rate")
    sf.write(str(audio / "zero_frames.wav"), np.zeros(0), 16_000, subtype="PCM_16")
    ex["zero_frames.wav"] = Expectation("WAV holding 0 frames", "skip", "empty audio")
    (audio / "zero_bytes.wav").write_bytes(b"")
    ex["zero_bytes.wav"] = Expectation("0-byte file", "skip", "empty file")
    (audio / "not_audio.wav").write_text("fname,labels\nthis is a text file, not audio\n" * 20)
    ex["not_audio.wav"] = Expectation("text file named .wav", "skip", "unreadable audio")
    (audio / "random_bytes.flac").write_bytes(rng.integers(0, 256, 4096, np.uint8).tobytes())
    ex["random_bytes.flac"] = Expectation("random bytes named .flac", "skip", "unreadable audio")

    wav = audio / "truncated_pcm16.wav"
    sf.write(str(wav), tone, 16_000, subtype="PCM_16")
    data = wav.read_bytes()
    header = len(data) - 2 * n  # 2 bytes per frame
    cut("truncated_pcm16.wav", data, "PCM16 WAV cut to half its bytes (frames present read)",
        "ok", samples=(len(data) // 2 - header) // 2)
    (audio / "broken_header.wav").write_bytes(data[:30])
    ex["broken_header.wav"] = Expectation("WAV cut inside its header", "skip", "unreadable audio")
    for name, fmt, subtype, reason in (("truncated.flac", "FLAC", "PCM_16", "corrupt or truncated"),
                                       ("truncated.ogg", "OGG", "VORBIS", "unreadable audio")):
        try:
            sf.write(str(audio / name), np.tile(tone, 3), 16_000, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, ValueError, TypeError):
            (audio / name).unlink(missing_ok=True)
            continue
        cut(name, (audio / name).read_bytes(), f"{fmt} cut in half", "skip", reason)
    return ex


def make_bad_corpus(root: str | Path, seed: int = 0, layout: str = "labels_csv",
                    long_seconds: float = 600.0, n_good: int = 12) -> dict[str, Expectation]:
    """Write the corpus into ``root`` (see the module docstring); return {fname: Expectation}.

    layout: "labels_csv" or "fsd50k". The good clips ``good_NN.wav`` (1-2.5 s, single label
    of GOOD_CLASSES) go to train / val / eval in a 4:1:1 ratio; the other cases cycle through
    train, val, eval in fname order, with labels cycling through GOOD_CLASSES (arbitrary: the
    cases test reading, not classification).
    """
    if layout not in ("labels_csv", "fsd50k"):
        raise ValueError(f"layout must be 'labels_csv' or 'fsd50k', not {layout!r}")
    root = Path(root)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []  # (fname, labels, split)
    for i in range(n_good):
        labels = [GOOD_CLASSES[i % len(GOOD_CLASSES)]]
        name = f"good_{i:02d}.wav"
        clip = render_clip(rng, labels, rng.uniform(1.0, 2.5))
        sf.write(str(audio / name), clip, 16_000, subtype="PCM_16")
        rows.append((name, labels, GOOD_SPLITS[i % len(GOOD_SPLITS)]))
    expectations = {name: Expectation("ordinary clip", "ok",
                                      samples=sf.info(str(audio / name)).frames)
                    for name, _, _ in rows}
    cases = _write_files(audio, rng, long_seconds)
    cases["missing_file.wav"] = Expectation("labels file names a missing file", "skip",
                                            "no such file")
    if layout == "fsd50k":
        (audio / "oov_label.wav").write_bytes((audio / "good_00.wav").read_bytes())
        cases["oov_label.wav"] = Expectation("label outside the vocabulary", "skip",
                                             "labels outside the vocabulary")
    for i, name in enumerate(sorted(cases)):
        labels = ["Not_in_vocabulary"] if name == "oov_label.wav" else [GOOD_CLASSES[i % 3]]
        rows.append((name, labels, SPLITS[i % 3]))
    expectations.update(cases)
    if layout == "labels_csv":
        with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["fname", "labels", "split"])
            w.writerows((name, ",".join(labels), split) for name, labels, split in rows)
    else:
        dev_dir, eval_dir = root / "FSD50K.dev_audio", root / "FSD50K.eval_audio"
        dev_dir.mkdir(exist_ok=True)
        eval_dir.mkdir(exist_ok=True)
        for name, _, split in rows:
            if (audio / name).exists():
                (audio / name).rename((eval_dir if split == "eval" else dev_dir) / name)
        audio.rmdir()
        write_fsd50k_ground_truth(root / "FSD50K.ground_truth",
                                  [(c, mid(c)) for c in GOOD_CLASSES],
                                  [(n, lab, s) for n, lab, s in rows if s != "eval"],
                                  [(n, lab) for n, lab, s in rows if s == "eval"])
    (root / "expectations.json").write_text(json.dumps(
        {k: asdict(v) for k, v in expectations.items()}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8")
    return expectations

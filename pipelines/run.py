"""Every stage of both embeddings and their comparison, end to end from raw audio.

    python -m pipelines.run [--data DIR] [--artifacts artifacts] [--preset auto|quick|paper]
                            [--kwmlp-checkpoint FILE] [--config run.toml] [--run NAME]

Without ``--data`` the built-in default dataset (``bow.data.synth.make_default_dataset``: 260
synthetic clips, FSD50K layout, no download) is generated on first use into
``<artifacts>/data/default``. The stages, each skipped when its fingerprint is unchanged (so a
second run is fast and a killed run resumes where it stopped):

  1. train_autoencoders   trained autoencoders -> autoencoders/
  2. train_autoencoders   --encoder random: the untrained control -> autoencoders-random/
  3-4. fit_codebooks      both -> codebooks/, codebooks-random/
  5-6. embed              both -> stores/bow.h5, stores/bow-random.h5
  7. pretrain_kwmlp       only without --kwmlp-checkpoint: our own KW-MLP, trained on the
                          training clips with their FIRST label each (keyword classification
                          needs one; a labels.csv view of those clips is written to
                          kwmlp/keywords/, with symbolic links to the audio) -> kwmlp/best.pth
  8. embed_kwmlp          -> stores/kwmlp.h5
  9. evaluate             heads on bow, bow-random, kwmlp and bow+kwmlp -> reports/<run>/
then the run's own section is added to reports/<run>/report.md (pipelines.run_report: stage
table, autoencoder and codebook figures, KW-MLP provenance, sweep plots or commands), and the
results table and the report's path are printed.

Presets (``--preset``), the TOML file (``--config``) and CPU threads: pipelines.run_config.
With ``--preset quick`` (the default on the built-in dataset) the run also does two small sweeps
(pipelines.sweep: mAP against D in {16, 64, 256}, and against the masking probability p) and
links their plots; the other sweeps are listed as commands that reuse this run's stages.
Options: ``--strict`` exits with status 3 when some input was skipped (unreadable audio, labels
outside the vocabulary), as the stages do; ``--no-sweeps``; ``--threads N``.
"""
from __future__ import annotations

import argparse
import csv
import io
import shutil
import time
from pathlib import Path

from bow.data.clips import holdout
from bow.data.datasets import load_dataset
from bow.io.stage import (ArtifactError, atomic_path, file_digest, read_fingerprint, read_json,
                       write_json)
from bow.io.store import read_skipped, store_fingerprint
from bow.data.synth import make_default_dataset
from pipelines import (embed, embed_kwmlp, evaluate, fit_codebooks, pretrain_kwmlp, run_report,
                       train_autoencoders)
from pipelines.cli import add_strict_option, clean_errors, report_skipped
from pipelines.run_config import (DEFAULT_DATA, KEYWORDS, RunConfig, add_run_options,
                                  config_from_run_args)


class Stages:
    """Runs the stages in order, timing each and noting whether it was up to date."""

    def __init__(self, total: int, log, label: str = ""):
        self.total, self.log, self.label, self.done = total, log, label, []

    def __call__(self, name: str, what: str, work, fingerprint):
        self.log(f"{self.label}[{len(self.done) + 1}/{self.total}] {name}: {what}")
        before, start = fingerprint(), time.perf_counter()
        out = work()
        seconds = time.perf_counter() - start
        status = "up to date" if before is not None and fingerprint() == before else "done"
        self.done.append({"stage": name, "what": what, "status": status,
                          "seconds": round(seconds, 2), "output": str(out)})
        self.log(f"      {'up to date, skipped' if status == 'up to date' else 'done'} "
                 f"({seconds:.1f} s) -> {out}")
        return out


def bow_stages(stages: Stages, data: Path, artifacts: Path, config: RunConfig, device: str,
               progress: bool, encoders=("trained", "random")) -> dict[str, Path]:
    """train_autoencoders, fit_codebooks and embed for each encoder kind -> {kind: store}."""
    out = {}
    for kind in encoders:
        cfg = config.stage("train_autoencoders", encoder=kind)
        what = "trained autoencoders" if kind == "trained" else "random-encoder control"
        ae_dir = train_autoencoders.output_dir(artifacts, kind)
        stages("train_autoencoders", f"{what} (hidden {cfg.hidden})",
               lambda: train_autoencoders.run(data, artifacts, cfg, device, progress),
               lambda: read_fingerprint(ae_dir))
    for kind in encoders:
        cfg = config.stage("fit_codebooks", encoder=kind)
        cb_dir = fit_codebooks.output_dir(artifacts, kind)
        stages("fit_codebooks", f"D = {cfg.n_codes} over the {kind} encoders",
               lambda: fit_codebooks.run(data, artifacts, cfg, device, progress),
               lambda: read_fingerprint(cb_dir))
    for kind in encoders:
        cfg = config.stage("embed", encoder=kind)
        path = embed.store_path(artifacts, kind)
        out[kind] = stages("embed", f"bag of words ({kind} encoders), every clip",
                           lambda: embed.run(data, artifacts, cfg, device, progress),
                           lambda: store_fingerprint(path))
    return out


def keyword_view(dataset, folder: Path, config: RunConfig) -> tuple[Path, dict]:
    """A labels.csv data set of the training clips with their first label (for KW-MLP
    pretraining): split train, and val (the val splits, or a seeded 10% of the training clips
    when those are empty); clips without a label are left out. Audio files are symbolic links
    (copies where links fail)."""
    splits = config.evaluate
    train = [c for c in dataset.select(splits.train_splits) if c.labels]
    val = [c for c in dataset.select(splits.val_splits) if c.labels]
    if not train:
        raise SystemExit(f"{dataset.root}: no clips in the training split(s) "
                         f"{list(splits.train_splits)} to pretrain KW-MLP on")
    if not val:
        train, val = holdout(train, 0.1, config.pretrain_kwmlp.seed)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["fname", "labels", "split"])
    for part, clips in (("train", train), ("val", val)):
        for clip in clips:
            name = clip.fname if clip.fname.endswith(clip.path.suffix) else \
                clip.fname + clip.path.suffix
            link = folder / "audio" / name
            writer.writerow([name, clip.labels[0], part])
            target = clip.path.resolve()
            if link.is_symlink() and link.readlink() == target:
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            try:
                link.symlink_to(target)
            except OSError:
                shutil.copy2(target, link)
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file() or labels_csv.read_text() != text.getvalue():
        with atomic_path(labels_csv) as tmp:
            tmp.write_text(text.getvalue())
    info = {"train": len(train), "val": len(val),
            "multi_label": sum(len(c.labels) > 1 for c in train + val),
            "classes": len({c.labels[0] for c in train + val})}
    return folder, info


def kwmlp_checkpoint(stages: Stages, artifacts: Path, config: RunConfig, device: str,
                     progress: bool, dataset, log) -> Path:
    """The KW-MLP checkpoint: the one given, else our own pretraining (done or skipped here)."""
    if config.kwmlp_checkpoint is not None:
        return Path(config.kwmlp_checkpoint)
    view, info = keyword_view(dataset, artifacts / KEYWORDS, config)
    cfg = config.stage("pretrain_kwmlp", train_splits=("train",), val_splits=("val",),
                       test_splits=())
    log(f"no --kwmlp-checkpoint: our own KW-MLP, pretrained ({config.preset} preset: "
        f"{cfg.epochs} epochs, depth {cfg.depth}) on {info['train']} training clips and "
        f"{info['val']} for validation, each with its first label ({info['classes']} "
        f"classes; {info['multi_label']} clips have more than one label)")
    return stages("pretrain_kwmlp", "our own KW-MLP on the training clips' first labels",
                  lambda: pretrain_kwmlp.run(view, artifacts, cfg, device, progress),
                  lambda: read_fingerprint(artifacts / "kwmlp"))


def _carry_build_times(done: list[dict], previous: Path) -> None:
    """Stages up to date now get ``built_seconds``: their time when an earlier run did them."""
    try:
        before = {(s["stage"], s["what"]): s for s in read_json(previous)["stages"]}
    except (ArtifactError, KeyError, TypeError):
        return
    for s in done:
        old = before.get((s["stage"], s["what"]), {})
        built = old.get("built_seconds") or (old["seconds"] if old.get("status") == "done"
                                             else None)
        if s["status"] == "up to date" and built:
            s["built_seconds"] = built


def default_data(artifacts: Path) -> Path:
    """The built-in dataset under ``artifacts`` (generated on first use)."""
    return make_default_dataset(Path(artifacts) / DEFAULT_DATA)


def run(data: Path | None, artifacts: Path, config: RunConfig = RunConfig(),
        device: str = "auto", progress: bool = True, log=print) -> Path:
    """Run every stage (module docstring) and return the path of the report."""
    artifacts = Path(artifacts)
    if data is None:
        start = time.perf_counter()
        data = default_data(artifacts)
        log(f"built-in default dataset: {data} ({time.perf_counter() - start:.1f} s)")
    data = Path(data)
    dataset = load_dataset(data)
    counts = {s: len(dataset.select([s])) for s in dataset.splits}
    log(f"data: {data} ({dataset.layout} layout, {len(dataset.clips)} clips {counts}, "
        f"{len(dataset.vocabulary)} labels); preset: {config.preset}")
    stages = Stages((9 if config.kwmlp_checkpoint is None else 8) + len(config.sweeps), log)
    bow_stages(stages, data, artifacts, config, device, progress)
    ckpt = kwmlp_checkpoint(stages, artifacts, config, device, progress, dataset, log)
    cfg = config.stage("embed_kwmlp", checkpoint=str(ckpt))
    path = embed_kwmlp.store_path(artifacts)
    stages("embed_kwmlp", f"KW-MLP embeddings from {ckpt}",
           lambda: embed_kwmlp.run(data, artifacts, cfg, device, progress),
           lambda: store_fingerprint(path))
    cfg = config.evaluate
    report = stages("evaluate", f"heads on {', '.join(cfg.feature_sets)}",
                    lambda: evaluate.run(data, artifacts, cfg, device, progress,
                                         run_name=config.run_name),
                    lambda: read_fingerprint(artifacts / "reports" / config.run_name))
    if config.sweeps:
        from pipelines import sweep   # imported here: pipelines.sweep imports this module
        for name, grid in config.sweeps:
            values = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in grid.items())
            results = sweep.sweep_dir(artifacts, name) / "results.csv"
            stages("sweep", f"{name} ({values or 'the paper grid'})",
                   lambda: (sweep.sweep(name, data, artifacts, config, device, progress, log,
                                        **grid), sweep.plot_path(artifacts, name))[1],
                   lambda: file_digest(results) if results.is_file() else None)
    _carry_build_times(stages.done, report.parent / "run.json")
    extra = run_report.add_section(report, data, dataset, artifacts, config, stages.done)
    write_json(report.parent / "run.json", {"data": str(data), "preset": config.preset,
                                            "config": config, "stages": stages.done,
                                            "device": device, **extra})
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Run every stage of both embeddings and the comparison, end to end.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_options(parser)
    add_strict_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with clean_errors("run"):
        config = config_from_run_args(args)
        report = run(args.data, args.artifacts, config, args.device, not args.no_progress)
        info = read_json(report.parent / "run.json", "run summary")
        store = embed.store_path(args.artifacts, "trained")
        skipped = read_skipped(store)
    print()
    print(run_report.results_text(report.parent, info))
    print()
    report_skipped("run", skipped, f"/skipped in {store}", args.strict)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; report: {report}")


if __name__ == "__main__":
    main()

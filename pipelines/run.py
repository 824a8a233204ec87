"""Every stage of both embeddings and their comparison, end to end from raw audio.

    python -m pipelines.run [--data DIR] [--artifacts artifacts] [--preset auto|quick|default|paper]
                            [--kwmlp-checkpoint FILE] [--audiomlp-checkpoint FILE]
                            [--config run.toml] [--run NAME]

Without ``--data`` the built-in default dataset (``bow.data.synth.make_default_dataset``: 260
synthetic clips, FSD50K layout, no download) is generated on first use into
``<artifacts>/data/default``. The stages, each skipped when its fingerprint is unchanged (so a
second run is fast and a killed run resumes where it stopped):

  1-6. for each bag-of-words arm (pipelines.run_config: the main encoder kind, PCA by
       default, then the other kinds as controls: trained autoencoders, random encoders)
       train_autoencoders -> autoencoders[-kind]/, fit_codebooks -> codebooks[-kind]/,
       embed -> stores/bow.h5 (the main arm), stores/bow-<kind>.h5 (the controls)
  7. pretrain_kwmlp       only without --kwmlp-checkpoint: our own KW-MLP, trained on the
                          training clips with their FIRST label each (keyword classification
                          needs one; a labels.csv view of those clips is written to
                          kwmlp/keywords/, with symbolic links to the audio) -> kwmlp/best.pth
  8. embed_kwmlp          -> stores/kwmlp.h5
  9. pretrain_audiomlp    only without --audiomlp-checkpoint: our own Audio-MLP autoencoder,
                          trained on the training clips (labels unused) -> audiomlp/best.pth
  10. embed_audiomlp      -> stores/audiomlp.h5
  11. embed_opensmile     the openSMILE peer, when the opensmile package is installed (else one
                          line says it was skipped; --no-opensmile leaves it out)
                          -> stores/opensmile.h5
  12. evaluate            heads on every arm, kwmlp, audiomlp, opensmile (with the peer), and
                          the main arm joined with each -> reports/<run>/
then the run's own section is added to reports/<run>/report.md (pipelines.run_report: stage
table, autoencoder and codebook figures, KW-MLP provenance, sweep plots or commands), and the
results table and the report's path are printed.

Presets (``--preset``), the TOML file (``--config``) and CPU threads: pipelines.run_config.
With ``--preset quick`` (the default on the built-in dataset) the run also does two small sweeps
(pipelines.sweep: mAP against D in {16, 64, 256}, and against the masking probability p) and
links their plots; the other sweeps are listed as commands that reuse this run's stages.
Options: ``--strict`` exits with status 3 when some input was skipped (unreadable audio, labels
outside the vocabulary), as the stages do; ``--no-sweeps``; ``--no-opensmile``; ``--threads N``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bow.data.datasets import load_dataset
from bow.io.stage import ArtifactError, file_digest, read_fingerprint, read_json, write_json
from bow.io.store import read_skipped, store_fingerprint
from pipelines import cli, embed_audiomlp, embed_kwmlp, evaluate, layout, run_report, sweep
from pipelines.orchestrate import (
    Stages,
    audiomlp_checkpoint,
    bow_stages,
    dataset_folder,
    kwmlp_checkpoint,
    n_stages,
    opensmile_stage,
)
from pipelines.run_config import RunConfig, add_run_options, config_from_run_args


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


def run(data: Path | None, artifacts: Path, config: RunConfig = RunConfig(),
        device: str = "auto", progress: bool = True, log=print) -> Path:
    """Run every stage (module docstring) and return the path of the report."""
    artifacts = Path(artifacts)
    if data is None:
        start = time.perf_counter()
        data = dataset_folder(None, artifacts)
        log(f"built-in default dataset: {data} ({time.perf_counter() - start:.1f} s)")
    data = Path(data)
    dataset = load_dataset(data)
    counts = {s: len(dataset.select([s])) for s in dataset.splits}
    log(f"data: {data} ({dataset.layout} layout, {len(dataset.clips)} clips {counts}, "
        f"{len(dataset.vocabulary)} labels); preset: {config.preset}")
    stages = Stages(n_stages(config), log)
    bow_stages(stages, data, artifacts, config, device, progress)
    ckpt = kwmlp_checkpoint(stages, artifacts, config, device, progress, dataset, log)
    cfg = config.stage("embed_kwmlp", checkpoint=str(ckpt))
    stages("embed_kwmlp", f"KW-MLP embeddings from {ckpt}",
           lambda: embed_kwmlp.run(data, artifacts, cfg, device, progress),
           lambda: store_fingerprint(layout.kwmlp_store(artifacts)))
    ckpt = audiomlp_checkpoint(stages, data, artifacts, config, device, progress, log)
    cfg = config.stage("embed_audiomlp", checkpoint=str(ckpt))
    stages("embed_audiomlp", f"Audio-MLP embeddings from {ckpt}",
           lambda: embed_audiomlp.run(data, artifacts, cfg, device, progress),
           lambda: store_fingerprint(layout.audiomlp_store(artifacts)))
    opensmile_stage(stages, data, artifacts, config, device, progress, log)
    cfg = config.evaluate_config()
    report = stages("evaluate", f"heads on {', '.join(cfg.feature_sets)}",
                    lambda: evaluate.run(data, artifacts, cfg, device, progress,
                                         run_name=config.run_name),
                    lambda: read_fingerprint(layout.report(artifacts, config.run_name)))
    for name, grid in config.sweeps:
        values = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in grid.items())
        results = layout.sweep(artifacts, name) / "results.csv"
        stages("sweep", f"{name} ({values or 'the paper grid'})",
               lambda: (sweep.sweep(name, data, artifacts, config, device, progress, log,
                                    **grid), layout.sweep_plot(artifacts, name))[1],
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
    cli.add_strict_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    config = cli.guarded("run", parser, lambda: config_from_run_args(args))
    report = cli.guarded("run", parser, lambda: run(args.data, args.artifacts, config,
                                                    args.device, not args.no_progress))
    info = read_json(report.parent / "run.json", "run summary")
    store = layout.bow_store(args.artifacts)
    print()
    print(run_report.results_text(report.parent, info))
    print()
    status = cli.report_skipped("run", read_skipped(store), f"/skipped in {store}", args.strict)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; report: {report}")
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()

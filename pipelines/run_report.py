"""pipelines.run's section of the report: what each stage did, with pictures that show it.

``add_section`` appends to the ``report.md`` written by pipelines.evaluate (replacing the
section of an earlier run, from the ``MARKER`` line on, so reruns do not stack copies):

* the data set, the preset and chance mAP (the mean class prevalence of the evaluation clips:
  the expected mAP of random scores);
* a table of the stages (what, up to date or done, seconds, output; a stage that was up to date
  shows the seconds it took when it was done, as recorded in an earlier run.json);
* autoencoders: validation MSE per family (trained, and the random-encoder control) and
  ``autoencoder_reconstructions.png`` (bow.report.figures.reconstruction_plot: a few evaluation
  chunks, one per label, beside each family's reconstruction);
* codebooks: usage per family in the embedded stores and ``codebook_usage.png``
  (bow.report.figures.codebook_usage_plot, trained vs random encoders);
* KW-MLP: the checkpoint given, or our own pretraining's accuracy and budget;
* Audio-MLP: the checkpoint given, or our own pretraining's held-out loss, budget and curves;
* openSMILE: the peer's store (its version, non-finite values stored as 0), or why it was left
  out;
* sweeps (pipelines.sweep): their plots when they have been run, else the commands.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from bow.bagofwords.model import load_encoder
from bow.bagofwords.tokens import FAMILIES
from bow.heads.metrics import chance_map
from bow.heads.protocols import scored_clips
from bow.io.stage import atomic_path
from bow.io.store import multi_hot
from bow.peers import opensmile
from bow.peers.embed import nonfinite_counts
from bow.report.figures import (
    codebook_usage_plot,
    example_chunks,
    reconstruction_plot,
    store_usage,
    usage_stats,
)
from bow.report.tables import markdown_table, results_table
from pipelines import layout, sweep

MARKER = "<!-- pipelines.run section -->"


def _autoencoder_rows(artifacts: Path, config) -> list[dict]:
    rows = {}
    for kind in config.encoders:
        hist = json.loads((layout.autoencoders(artifacts, kind) / "history.json").read_text())
        for family, s in hist["families"].items():
            rows.setdefault(family, {"family": family})[kind] = \
                f"{s['val_mse']:.3f}" + (f" (epoch {s['best_epoch']})" if kind == "trained"
                                         else "")
    return [rows[f] for f in FAMILIES]


def _kwmlp_text(artifacts: Path, config) -> str:
    if config.kwmlp_checkpoint:
        return f"Checkpoint given: `{config.kwmlp_checkpoint}` (no pretraining of our own)."
    info = json.loads((layout.kwmlp(artifacts) / "best.json").read_text())
    cfg = info["config"]
    return (f"No checkpoint was given, so this run pretrained **its own KW-MLP** "
            f"({config.preset} preset: {cfg['epochs']} epochs, depth {cfg['depth']}, batch "
            f"{cfg['batch_size']}) on the training clips with their first label each "
            f"({len(info['classes'])} classes, {info['n_clips']['train']} clips, "
            f"{info['n_clips']['val']} for validation): validation accuracy "
            f"{info['val_accuracy']:.3f} at epoch {info['best_epoch']}. For the authors' "
            "checkpoint give `--kwmlp-checkpoint kwmlp.pth`.\n\n"
            "![KW-MLP pretraining curves](../../kwmlp/curves.png)")


def _audiomlp_text(artifacts: Path, config) -> str:
    if config.audiomlp_checkpoint:
        return f"Checkpoint given: `{config.audiomlp_checkpoint}` (no pretraining of our own)."
    info = json.loads((layout.audiomlp(artifacts) / "best.json").read_text())
    cfg = info["config"]
    return (f"No checkpoint was given, so this run pretrained **its own Audio-MLP "
            f"autoencoder** ({config.preset} preset: {cfg['epochs']} epochs, recipe "
            f"{cfg['recipe']}: {cfg['input_scaling']} input, "
            f"{'linear' if cfg['bottleneck_act'] == 'none' else cfg['bottleneck_act']} "
            f"bottleneck, {cfg['loss']} loss) on {info['n_chunks']['train']} chunks of "
            f"{info['n_clips']['train']} training clips, labels unused: held-out "
            f"{cfg['loss']} {info['val_loss']:.4g} at epoch {info['best_epoch']}, against "
            f"{info['val_mean']:.4g} for predicting the per-band mean. For the authors' "
            "checkpoint give `--audiomlp-checkpoint audiomae.pth`.\n\n"
            "![Audio-MLP pretraining curves](../../audiomlp/curves.png)")


def _opensmile_text(artifacts: Path, config) -> str:
    if not config.opensmile:
        return ("Not run: " + ("left out with `--no-opensmile`." if opensmile.available()
                               else opensmile.MISSING + "."))
    store = layout.opensmile_store(artifacts)
    with h5py.File(store, "r") as f:
        version = json.loads(f.attrs["upstream"])["opensmile"]
    values, clips = nonfinite_counts(store)
    return (f"The classic peer: openSMILE {version} {opensmile.FEATURE_SET} functionals "
            f"({opensmile.N_FUNCTIONALS}) of every clip and of each of its 1 s chunks "
            f"(`{store.name}`; {values} non-finite value(s) in {clips} clip(s) stored as 0). "
            f"{opensmile.LICENCE}.")


def sweep_options(data: Path, artifacts: Path, config) -> str:
    """The pipelines.sweep options that reuse this run's stages (same data, preset, config)."""
    builtin = Path(data).resolve() == layout.default_data(artifacts).resolve()
    options = ([] if builtin else [f"--data {data}"]) + [f"--artifacts {artifacts}",
                                                          f"--preset {config.preset}"]
    options += [f"--config {config.config_file}"] if config.config_file else []
    options += [f"--kwmlp-checkpoint {config.kwmlp_checkpoint}"] if config.kwmlp_checkpoint \
        else []
    options += [f"--audiomlp-checkpoint {config.audiomlp_checkpoint}"] \
        if config.audiomlp_checkpoint else []
    return " ".join(options)


def _sweeps_text(artifacts: Path, data: Path, config) -> list[str]:
    lines, commands = [], []
    for name in sweep.SWEEPS:
        plot = layout.sweep_plot(artifacts, name)
        if plot.is_file():
            rel = Path("..", "..", plot.relative_to(artifacts)).as_posix()
            lines += [f"![{sweep.SWEEPS[name]}]({rel})", ""]
        else:
            commands.append(f"python -m pipelines.sweep {name} "
                            f"{sweep_options(data, artifacts, config)}")
    if commands:
        lines += ["Not run yet (each is resumable and ends with a plot linked here on the next "
                  "`pipelines.run`):", "", "```bash", *commands, "```", ""]
    return lines


def add_section(report: Path, data: Path, dataset, artifacts: Path, config,
                stages: list[dict]) -> dict:
    """Write the figures and append the run's section to ``report``; return its numbers."""
    out = report.parent
    clips, scored = scored_clips(dataset.clips, config.evaluate.eval_splits)
    chance = chance_map(np.stack([multi_hot(c.labels, dataset.vocabulary) for c in clips]))
    usages = {f"{kind} encoders": store_usage(layout.bow_store(artifacts, kind))
              for kind in config.encoders}
    codebook_usage_plot(out / "codebook_usage.png", usages,
                        title="Codebook usage per token family, all embedded chunks")
    encoders = {f: load_encoder(layout.autoencoders(artifacts, config.encoder) / f"{f}.pt")
                for f in FAMILIES}
    logmel, names = example_chunks(clips)
    reconstruction_plot(out / "autoencoder_reconstructions.png", encoders, logmel, names,
                        title=f"Log-mel chunks (left) and each family's reconstruction "
                              f"({config.encoder} encoders)")
    usage_rows = [{"family": f, **{m: "{used}/{n_codes} used, perplexity {perplexity:.1f}"
                                   .format(**usage_stats(u[f])) for m, u in usages.items()}}
                  for f in FAMILIES]
    stage_rows = [{**s, "seconds": f"{s['seconds']:.1f}" + (
        f" (built in {s['built_seconds']:.1f})" if s.get("built_seconds") else "")}
        for s in stages]
    section = [
        MARKER, "", "## The run (pipelines.run)", "",
        f"Data: `{data}` ({dataset.layout} layout, {len(dataset.clips)} clips, "
        f"{len(dataset.vocabulary)} labels). Preset: **{config.preset}**. Chance mAP on "
        f"{scored} (mean class prevalence, the expected mAP of random scores): "
        f"{chance:.3f}.", "",
        markdown_table(stage_rows, [("stage", "stage"), ("what", "what"), ("status", "status"),
                                    ("seconds", "seconds"), ("output", "output")],
                       ["l", "l", "l", "r", "l"]), "",
        "### Encoders", "",
        f"Main arm: **{config.encoder}** encoders; {config.train_autoencoders.tokens} tokens, "
        f"{config.embed.assignment} assignment for every arm. Validation MSE of held-out "
        "training tokens, standardised (1.0 = predicting the mean):",
        "", markdown_table(_autoencoder_rows(artifacts, config), [("family", "family")] + [
            (k, {"trained": "trained (best epoch)", "random": "random control",
                 "pca": "PCA"}[k]) for k in config.encoders]),
        "", "![Autoencoder reconstructions](autoencoder_reconstructions.png)", "",
        "### Codebooks", "",
        markdown_table(usage_rows, [("family", "family")] + [(m, m) for m in usages]), "",
        "![Codebook usage per family](codebook_usage.png)", "",
        "### KW-MLP", "", _kwmlp_text(artifacts, config), "",
        "### Audio-MLP", "", _audiomlp_text(artifacts, config), "",
        "### openSMILE", "", _opensmile_text(artifacts, config), "",
        "### Sweeps", "", *_sweeps_text(artifacts, data, config)]
    text = report.read_text()
    text = text.split(MARKER)[0].rstrip("\n") + "\n\n" + "\n".join(section)
    with atomic_path(report) as tmp:
        tmp.write_text(text)
    return {"chance_map": chance, "scored_on": scored,
            "figures": ["codebook_usage.png", "autoencoder_reconstructions.png"]}


def results_text(run_dir: Path, info: dict) -> str:
    """The results table of the run and its chance level, for the terminal."""
    table = results_table(run_dir / "results.csv")
    return (f"{table}\n\nchance mAP on {info['scored_on']} (mean class prevalence): "
            f"{info['chance_map']:.3f}")

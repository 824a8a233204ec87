"""The papers' sweeps: one command each, resumable, ending with a CSV and a plot.

    python -m pipelines.sweep codebook-size [--sizes 16,64,256,1024] [--widths 256,512,4096]
                                            [--dropouts 0.1,0.4]        (Verma, Fig. 2)
    python -m pipelines.sweep masking [--probabilities 0,0.1,0.2,0.3,0.35,0.4,0.5,0.6]
                                                                        (Verma, Fig. 3)
    python -m pipelines.sweep kwmlp-scene [--algorithms iterative,single,mean]
                                                                        (Morshed, Table 2)
    python -m pipelines.sweep kwmlp-depth [--depths 4,8,12]             (Morshed, Table 4)

Every sweep also takes pipelines.run's options (--data, default the built-in dataset;
--artifacts; --preset; --config; --kwmlp-checkpoint; --device; --threads), so its upstream stages
are the run's own and are skipped when the run has done them (or run here when it has not).

* codebook-size: for each D, codebooks over the encoders of the run's main arm and a
  bag-of-words store in ``sweeps/codebook-size/D<D>/`` (whose encoder folder links to the
  run's), then one head per width and dropout. A D that the training data cannot fill (fewer
  tokens than codes: the thumbnail family has one token per chunk) is recorded as failed.
* masking: heads on the store of the run's main arm with token masking probability p.
* kwmlp-scene / kwmlp-depth: KW-MLP stores in ``sweeps/<name>/<point>/`` embedded with each
  scene algorithm / after each number of blocks of the run's checkpoint (our own pretraining,
  or --kwmlp-checkpoint; embed_kwmlp's ``blocks``: the embedding is taken after the first N
  blocks of the one model), then one head each. A depth beyond the checkpoint's is recorded
  as failed.
Heads are the run's (``[evaluate]`` options and preset) with only the swept value changed,
scored by the same protocol (bow.heads.protocols). Each point is written to
``sweeps/<name>/points/<point>.json`` as soon as it is scored (or has failed), with a
fingerprint of its head config and stores: a rerun skips finished points and recomputes
changed ones. At the end: ``sweeps/<name>/results.csv`` and ``sweeps/<name>/<name>.png``
(chance mAP as a dashed line), over every saved point computed under the same upstream models
and options (so a smaller grid run later, e.g. by pipelines.run, keeps the full plot);
pipelines.run links the plot in its report. With ``--data``, ``--preset`` defaults to paper:
pass the run's preset (``--preset quick``) to reuse a quick run's stages.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bow.bagofwords.codebook import CODEBOOK_SIZES, CodebookError
from bow.data.clips import clips_fingerprint
from bow.data.datasets import load_dataset
from bow.heads.metrics import chance_map
from bow.heads.points import SCORES, Points
from bow.heads.protocols import scored_clips
from bow.io.stage import InputError, digest, file_digest, read_fingerprint, to_jsonable
from bow.io.store import multi_hot, store_fingerprint
from bow.kwmlp.scene import ALGORITHMS
from bow.report.figures import sweep_plot
from bow.report.tables import fmt, markdown_table, write_csv
from pipelines import cli, embed, embed_kwmlp, fit_codebooks, layout, run_config, train_autoencoders
from pipelines.orchestrate import Context, Stages, bow_stages, dataset_folder, kwmlp_checkpoint

SWEEPS = {"codebook-size": "mAP against codebook size D (Verma, Fig. 2)",
          "masking": "mAP against token masking probability p (Verma, Fig. 3)",
          "kwmlp-scene": "KW-MLP scene algorithm (Morshed, Table 2)",
          "kwmlp-depth": "KW-MLP embedding depth (Morshed, Table 4)"}
GRID = {"sizes": CODEBOOK_SIZES, "widths": (256, 512, 4096), "dropouts": (0.1, 0.4),
        "probabilities": (0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6), "algorithms": ALGORITHMS,
        "depths": (4, 8, 12)}   # defaults: the papers' grids
FEATURES = {"codebook-size": "bag of words", "masking": "bag of words (the run's main arm)",
            "kwmlp-scene": "KW-MLP", "kwmlp-depth": "KW-MLP"}
PARAMS = {"codebook-size": ("n_codes", "width", "dropout"), "masking": ("mask_p",),
          "kwmlp-scene": ("scene_algorithm",), "kwmlp-depth": ("blocks",)}


def _without(config, *keys) -> dict:
    """A config as plain JSON without ``keys`` (the swept values)."""
    return {k: v for k, v in to_jsonable(config).items() if k not in keys}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    if link.is_symlink() and link.readlink() == target:
        return
    link.unlink(missing_ok=True)
    link.symlink_to(target, target_is_directory=True)


def codebook_size(ctx, points: Points, sizes, widths, dropouts) -> None:
    kind = ctx.config.encoder                            # the run's main arm
    cfg = ctx.config.stage("train_autoencoders", encoder=kind)
    ae_dir = train_autoencoders.run(ctx.data, ctx.artifacts, cfg, ctx.device, ctx.progress)
    embed_cfg = ctx.config.stage("embed", encoder=kind)
    clips = clips_fingerprint(ctx.dataset.clips)
    points.context = digest({"autoencoders": read_fingerprint(ae_dir), "clips": clips,
                             "fit_codebooks": _without(ctx.config.fit_codebooks, "n_codes"),
                             "embed": embed_cfg,
                             "head": _without(points.head, "width", "dropout")})
    for d in sizes:
        folder = layout.sweep(ctx.artifacts, "codebook-size") / f"D{d}"
        _link(layout.autoencoders(folder, kind), ae_dir)
        cb = ctx.config.stage("fit_codebooks", encoder=kind, n_codes=d)
        grid = [(f"D{d}_w{w}_p{p:g}", {"n_codes": d, "width": w, "dropout": p})
                for w in widths for p in dropouts]
        key = digest({"fit_codebooks": cb, "autoencoders": read_fingerprint(ae_dir),
                      "clips": clips})
        if all(points.failed_before(point, key) for point, _ in grid):
            ctx.log(f"D = {d}: failed before, not retried")
            continue
        ctx.log(f"D = {d}: codebooks and store in {folder}")
        try:
            fit_codebooks.run(ctx.data, folder, cb, ctx.device, ctx.progress)
        except CodebookError as e:     # e.g. fewer training tokens than codes
            for point, params in grid:
                points.failed(point, params, key, str(e))
            continue
        store = embed.run(ctx.data, folder, embed_cfg, ctx.device, ctx.progress)
        for point, params in grid:
            points.score(point, params, [store], width=params["width"],
                         dropout=params["dropout"])


def masking(ctx, points: Points, probabilities) -> None:
    stages = Stages(3, ctx.log, label="upstream ")
    store = bow_stages(stages, ctx.data, ctx.artifacts, ctx.config, ctx.device,
                       ctx.progress, encoders=(ctx.config.encoder,))[ctx.config.encoder]
    points.context = digest({"store": store_fingerprint(store, required=True),
                             "head": _without(points.head, "mask_p")})
    for p in probabilities:
        points.score(f"p{p:g}", {"mask_p": p}, [store], mask_p=p)


def kwmlp_sweep(ctx, points: Points, name: str, key: str, values) -> None:
    stages = Stages(1, ctx.log, label="upstream ")
    ckpt = kwmlp_checkpoint(stages, ctx.artifacts, ctx.config, ctx.device, ctx.progress,
                            ctx.dataset, ctx.log)
    checkpoint = file_digest(ckpt)
    points.context = digest({"checkpoint": checkpoint,
                             "clips": clips_fingerprint(ctx.dataset.clips),
                             "embed_kwmlp": _without(ctx.config.embed_kwmlp, key, "checkpoint"),
                             "head": points.head})
    for value in values:
        folder = layout.sweep(ctx.artifacts, name) / str(value)
        cfg = ctx.config.stage("embed_kwmlp", checkpoint=str(ckpt), **{key: value})
        failure_key = digest({"embed_kwmlp": _without(cfg, "checkpoint"),
                              "checkpoint": checkpoint})
        if points.failed_before(str(value), failure_key):
            continue
        try:
            store = embed_kwmlp.run(ctx.data, folder, cfg, ctx.device, ctx.progress)
        except InputError as e:     # e.g. more blocks than the checkpoint has
            points.failed(str(value), {key: value}, failure_key, str(e))
            continue
        points.score(str(value), {key: value}, [store])


def sweep(name: str, data: Path | None, artifacts: Path,
          config: run_config.RunConfig = run_config.RunConfig(), device: str = "auto",
          progress: bool = True, log=print, **grid) -> list[dict]:
    """Run sweep ``name`` (module docstring) over ``grid`` (keys of ``GRID``; its values where
    absent or None); return its rows."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; expected one of {list(SWEEPS)}")
    artifacts = Path(artifacts)
    data = dataset_folder(data, artifacts)
    ctx = Context(data, artifacts, config, load_dataset(data), device, progress, log)
    folder = layout.sweep(artifacts, name)
    points = Points(folder, config.evaluate, device, progress, log,
                    protocol=config.evaluate.protocol, order=ALGORITHMS)
    grid = {k: grid.get(k) or v for k, v in GRID.items()}
    if name == "codebook-size":
        codebook_size(ctx, points, grid["sizes"], grid["widths"], grid["dropouts"])
    elif name == "masking":
        masking(ctx, points, grid["probabilities"])
    elif name == "kwmlp-scene":
        kwmlp_sweep(ctx, points, name, "scene_algorithm", grid["algorithms"])
    else:
        kwmlp_sweep(ctx, points, name, "blocks", grid["depths"])
    clips, scored = scored_clips(ctx.dataset.clips, config.evaluate.eval_splits)
    chance = chance_map([multi_hot(c.labels, ctx.dataset.vocabulary) for c in clips])
    rows = points.rows(PARAMS[name])
    write_csv(folder / "results.csv", rows, ("point", *PARAMS[name], *SCORES, "error"))
    x = PARAMS[name][0]
    sweep_plot(layout.sweep_plot(artifacts, name), rows, x,
               groups=PARAMS[name][1:], label=FEATURES[name], xlabel={"n_codes": "codebook size D",
                                                "mask_p": "masking probability p",
                                                "blocks": "blocks (embedding depth)"}.get(x, x),
               title=f"{SWEEPS[name]}\n{data.name}, {config.preset} preset",
               logx=name == "codebook-size",
               hlines={f"chance ({scored})": chance} if chance is not None else None)
    return rows


def _values(kind):
    return lambda text: tuple(kind(v) for v in text.split(",") if v.strip())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="The papers' sweeps (resumable; each ends "
                                     "with results.csv and a plot).")
    parser.add_argument("sweep", choices=list(SWEEPS), help="; ".join(
        f"{k}: {v}" for k, v in SWEEPS.items()))
    run_config.add_run_options(parser, run_only=False)
    helps = {"sizes": "codebook-size: codebook sizes D", "widths": "codebook-size: head widths",
             "dropouts": "codebook-size: head dropouts", "probabilities": "masking: p values",
             "algorithms": "kwmlp-scene: scene algorithms", "depths": "kwmlp-depth: blocks"}
    for key, default in GRID.items():
        kind = str if key == "algorithms" else type(default[0])
        parser.add_argument(f"--{key}", type=_values(kind), default=default,
                            help=f"{helps[key]}, comma-separated (default: "
                                 f"{','.join(map(str, default))})")
    args = parser.parse_args(argv)
    config = cli.guarded("sweep", parser, lambda: run_config.config_from_run_args(args))
    grid = {k: getattr(args, k) for k in GRID}
    rows = cli.guarded("sweep", parser, lambda: sweep(args.sweep, args.data, args.artifacts,
                                                      config, args.device,
                                                      not args.no_progress, **grid))
    shown = [{**r, "map": fmt(r.get("map")) if "error" not in r else f"failed: {r['error']}",
              "best_epoch": fmt(r.get("best_epoch"), 0)} for r in rows]
    print(markdown_table(shown, [(k, k) for k in ("point", *PARAMS[args.sweep], "map",
                                                  "chunk_map", "d_prime",
                                                  "best_epoch")]))
    print(f"\nplot: {layout.sweep_plot(args.artifacts, args.sweep)}")


if __name__ == "__main__":
    main()

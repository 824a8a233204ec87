"""Train one classification head on one or several feature stores, save it and score it.

    python -m pipelines.train_heads --features artifacts/stores/bow.h5 [--name NAME]
    python -m pipelines.train_heads --features bow.h5,kwmlp.h5    (or --features repeated)

Several stores are joined chunk by chunk (``bow.io.featureset``: clips matched by fname,
chunk counts must agree) and, with ``--fusion late`` (the default), get a head each whose
probabilities are mixed with weights chosen on validation (``bow.heads.fusion``). The head
(``bow.heads.model``) is trained on ``--train-splits``, stopped early on ``--val-splits`` (a
seeded ``--val-fraction`` of the training clips when those hold no clip) and scored on
``--eval-splits`` (``bow.heads.metrics``; no score when they hold no clip).
For a fold dataset such as ESC-10 give the folds, e.g. ``--train-splits 1,2,3
--val-splits 4 --eval-splits 5``; ``python -m pipelines.evaluate`` runs the whole k-fold.

Output ``<artifacts>/heads/<name>/`` (name: the store names joined with "+"):
  head.npz      weights (``model/<parameter>``) and normaliser (``normaliser/mean``,
                ``normaliser/scale``, ``normaliser/count_columns``): plain arrays, no pickle
  head.json     head config, vocabulary, input size, training history, best epoch
  scores.json   evaluation scores (map, d_prime, mean_auc, accuracy, per-class AP)
  fusion.json   several stores with late fusion: the blocks (stores), their columns and
                weights; each block's head.npz and head.json are in ``<name>/<store>/``
  config.json, fingerprint.json   (bow.io.stage) the stage is skipped when the config and the
                stores' fingerprints are unchanged. ``bow.heads.fusion.load_head(dir)`` reads
                either kind of head.
Locks: exclusive on the head folder, shared on each store (bow.io.store.lock_dir).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from bow.heads.model import HeadConfig
from bow.heads.protocols import fit_and_score
from bow.io.featureset import load_features
from bow.io.stage import clear_done, is_done, locked, mark_done, stage_fingerprint, write_json
from bow.io.store import lock_dir, store_fingerprint
from pipelines import cli, layout

TrainHeadsConfig = HeadConfig  # the stage's config is the head's (paper defaults)


def parse_features(values) -> list[Path]:
    """['a.h5,b.h5', 'c.h5'] -> [a.h5, b.h5, c.h5]."""
    return [Path(p.strip()) for v in values for p in str(v).split(",") if p.strip()]


def head_name(paths) -> str:
    """bow.h5 + kwmlp.h5 -> 'bow+kwmlp'."""
    return "+".join(Path(p).stem for p in paths)


def run(features, artifacts: Path, config: HeadConfig = TrainHeadsConfig(),
        name: str | None = None, device: str = "auto", progress: bool = True) -> Path:
    """Train, save and score one head on the stores ``features``; return its folder."""
    paths = [Path(p) for p in features]
    out = layout.head(artifacts, name or head_name(paths))
    with contextlib.ExitStack() as locks:
        for p in paths:  # readers of the stores: embed cannot rewrite them meanwhile
            locks.enter_context(locked(lock_dir(p), "train_heads", shared=True))
        locks.enter_context(locked(out, "train_heads"))
        inputs = {"stores": [[p.name, store_fingerprint(p, required=True)] for p in paths]}
        fingerprint = stage_fingerprint(config, inputs)
        if is_done(out, fingerprint):
            return out
        clear_done(out)
        head, result = fit_and_score(load_features(paths), config, device, progress)
        head.save(out)
        write_json(out / "scores.json", {**result, "stores": [str(p) for p in paths]})
        mark_done(out, fingerprint, config, inputs)
    return out


def summary(out: Path) -> str:
    """A few lines describing a trained head folder."""
    s = json.loads((out / "scores.json").read_text())
    lines = [f"{out}: best epoch {s['best_epoch']} of {s['epochs']} (validation clip mAP "
             f"{s['best_val_map']:.4f} on {s['validation']}); {s['n_train_clips']} training, "
             f"{s['n_val_clips']} validation clips"]
    if s.get("map") is not None:
        score = f"eval ({s['n_eval_clips']} clips): mAP {s['map']:.4f}, d' {s['d_prime']}"
        if "accuracy" in s:
            score += f", accuracy {s['accuracy']:.4f}"
        lines.append(score)
    else:
        lines.append("no clip in the evaluation splits: not scored")
    if s["dropped_clips"]:
        lines.append(f"{len(s['dropped_clips'])} clip(s) not in every store were left out")
    return "\n".join(lines)


def _options(parser) -> None:
    parser.add_argument("--features", action="append", required=True, metavar="STORE.h5",
                        help="feature store(s): comma-separated or repeated; several are "
                             "concatenated chunk by chunk")
    parser.add_argument("--name", default=None,
                        help="head folder name under <artifacts>/heads (default: store names "
                             "joined with +)")


def _work(args, cfg: HeadConfig):
    out = run(parse_features(args.features), args.artifacts, cfg, args.name, args.device,
              not args.no_progress)
    print(summary(out))


def main(argv=None) -> None:
    cli.stage_main(argv, "train_heads", "Train one MLP head on feature stores, save it and "
                   "score it.", TrainHeadsConfig, _work, options=[_options], strict=False,
                   data_required=False, data_help="not used (stores hold the labels)")


if __name__ == "__main__":
    main()

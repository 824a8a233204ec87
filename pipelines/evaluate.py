"""Train heads on every feature store of a data set and write the comparison report.

    python -m pipelines.evaluate --artifacts DIR [--run NAME] [--data DATASET] [head options]

Feature sets: by default every store in ``DIR/stores`` (bow.h5, bow-random.h5 (the
random-encoder control), kwmlp.h5, audiomlp.h5, the openSMILE peer's opensmile.h5, then any
other ``*.h5`` there), plus ``bow+kwmlp``, ``bow+audiomlp`` and ``bow+opensmile`` when both
stores exist (a head per store, fused with weights chosen on validation: ``--fusion``,
bow.heads.fusion); ``--feature-sets bow,kwmlp,bow+kwmlp`` chooses (names are store file
names without .h5, joined with + to fuse). Every feature
set gets the same splits and head settings (``bow.heads.protocols``): the ``splits`` protocol when
some clip is in ``--eval-splits`` (FSD50K: train / early stop on val / score eval), else k-fold
over integer-named splits (ESC-10: folds 1-5, early stop on the next fold).

Output ``DIR/reports/<run>/``: results.csv, per_class_ap.csv, report.md and PNG plots
(``bow.report.tables``), with config.json and fingerprint.json; skipped when the config and the
stores' fingerprints are unchanged. The data set's name in the report is ``--data``'s folder
name when given, else ``DIR``'s. Locks: exclusive on the report folder, shared on each store.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bow.config import choose, option
from bow.heads.model import HeadConfig
from bow.heads.protocols import PROTOCOLS, run_protocol
from bow.io.featureset import STANDARD, find_feature_sets, load_features
from bow.io.stage import clear_done, is_done, locked, mark_done, stage_fingerprint
from bow.io.store import lock_dir, store_fingerprint
from bow.progress import progress as progress_bar
from bow.report.tables import head_settings, results_table, write_report
from pipelines import cli, layout


@dataclass(frozen=True)
class EvaluateConfig(HeadConfig):
    """The heads (bow.heads.model) and which protocol and feature sets they are scored with."""
    protocol: str = option("auto", "auto, splits (train / val / eval splits) or kfold "
                           "(integer-named folds)")
    feature_sets: tuple[str, ...] = option((), "store names without .h5, + joins stores "
                                           "(default: every store, and bow+kwmlp, "
                                           "bow+audiomlp, bow+opensmile when their stores "
                                           "exist)")

    def __post_init__(self):
        super().__post_init__()
        choose("protocol", self.protocol, PROTOCOLS)


def run(data: Path | None, artifacts: Path, config: EvaluateConfig = EvaluateConfig(),
        device: str = "auto", progress: bool = True, run_name: str = "default") -> Path:
    """Evaluate every feature set and write the report; return the path of report.md."""
    artifacts = Path(artifacts)
    dataset = Path(data).name if data else artifacts.resolve().name
    sets = find_feature_sets(layout.stores(artifacts), config.feature_sets)
    out = layout.report(artifacts, run_name)
    with contextlib.ExitStack() as locks:
        for p in sorted({p for paths in sets.values() for p in paths}):
            locks.enter_context(locked(lock_dir(p), "evaluate", shared=True))
        locks.enter_context(locked(out, "evaluate"))
        inputs = {"dataset": dataset, "feature_sets": {
            name: [[p.name, store_fingerprint(p, required=True)] for p in paths]
            for name, paths in sets.items()}}
        fingerprint = stage_fingerprint(config, inputs)
        if is_done(out, fingerprint):
            return out / "report.md"
        clear_done(out)
        entries = []
        for name, paths in progress_bar(sets.items(), desc="feature sets", enabled=progress):
            features = load_features(paths)
            result = run_protocol(features, config, config.protocol, device, progress)
            result["stores"] = " + ".join(f"{Path(s['path']).name} ({s['kind']}, {s['dim']}-d)"
                                          for s in features.sources)
            entries.append({"dataset": dataset, "features": name, "result": result})
        notes = [f"{s}.h5 not found in {layout.stores(artifacts)}" for s in STANDARD
                 if not config.feature_sets and s not in sets]
        report = write_report(out, entries, title=f"Classification heads: {run_name}",
                              settings=head_settings(config), notes=notes)
        mark_done(out, fingerprint, config, inputs)
    return report


def _run_option(parser) -> None:
    parser.add_argument("--run", default="default", help="report name: <artifacts>/reports/RUN")


def _work(args, cfg: EvaluateConfig):
    report = run(args.data, args.artifacts, cfg, args.device, not args.no_progress, args.run)
    print(results_table(report.parent / "results.csv"))
    print(f"\nreport: {report}")


def main(argv=None) -> None:
    cli.stage_main(argv, "evaluate", "Train heads on every feature store and write the "
                   "comparison report.", EvaluateConfig, _work, options=[_run_option],
                   strict=False, data_required=False,
                   data_help="dataset folder, only to name the data set in the report "
                             "(default: the --artifacts folder's name)")


if __name__ == "__main__":
    main()

"""Train heads on every feature store of a data set and write the comparison report.

    python -m pipelines.evaluate --artifacts DIR [--run NAME] [--data DATASET] [head options]

Feature sets: by default every store in ``DIR/stores`` (bow.h5, bow-random.h5 (the
random-encoder control), kwmlp.h5, then any other ``*.h5`` there), plus ``bow+kwmlp`` (the two
stores concatenated chunk by chunk) when both exist; ``--feature-sets bow,kwmlp,bow+kwmlp``
chooses (names are store file names without .h5, joined with + to concatenate). Every feature
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
import csv
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from bow.heads.protocols import PROTOCOLS, evaluate
from bow.io.featureset import FeatureSetError, load_features
from bow.heads.model import HeadConfig
from bow.report.tables import markdown_table, mean_std, write_report
from bow.io.stage import clear_done, is_done, locked, mark_done, stage_fingerprint
from bow.io.store import StoreError, lock_dir, store_fingerprint
from pipelines.cli import add_config_args, clean_errors, common_parser, config_from_args

STANDARD = ("bow", "bow-random", "kwmlp")  # report order; others follow alphabetically
COMBINED = ("bow+kwmlp",)


@dataclass(frozen=True)
class EvaluateConfig(HeadConfig):
    protocol: str = field(default="auto", metadata={
        "help": "auto, splits (train / val / eval splits) or kfold (integer-named folds)"})
    feature_sets: tuple[str, ...] = field(default=(), metadata={
        "help": "store names without .h5, + joins stores (default: every store, and "
                "bow+kwmlp when both exist)"})

    def __post_init__(self):
        super().__post_init__()
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")


def find_feature_sets(stores: Path, requested=()) -> dict[str, list[Path]]:
    """Feature set name -> its store paths (see the module docstring)."""
    found = sorted(p.stem for p in stores.glob("*.h5") if not p.name.startswith("."))
    if requested:
        missing = sorted({s for name in requested for s in name.split("+")} - set(found))
        if missing:
            raise FileNotFoundError(f"{stores}: no store for {missing} (found: {found})")
        names = list(requested)
    else:
        names = [s for s in STANDARD if s in found] + [s for s in found if s not in STANDARD]
        names += [c for c in COMBINED if all(s in found for s in c.split("+"))]
    return {name: [stores / f"{s}.h5" for s in name.split("+")] for name in names}


def settings_text(config: HeadConfig) -> str:
    """One paragraph describing the heads and metrics, for the report."""
    return (f"Heads: MLP with two hidden layers of {config.width} units, dropout "
            f"{config.dropout:g}, {config.loss} loss, {config.normalisation} count "
            f"normalisation, token masking p = {config.mask_p:g}, Adam lr {config.lr:g}, "
            f"batch {config.batch_size} chunks, at most {config.max_epochs} epochs, patience "
            f"{config.patience}, seed {config.seed}. Clip probabilities are the mean of the "
            "clip's 1 s chunk probabilities; mAP is the macro mean of per-class average "
            "precision over the classes with a positive clip; d′ = √2·Φ⁻¹(mean ROC AUC); "
            "accuracy (single-label data only) takes the most probable class.")


def run(data: Path | None, artifacts: Path, config: EvaluateConfig = EvaluateConfig(),
        device: str = "auto", progress: bool = True, run_name: str = "default") -> Path:
    """Evaluate every feature set and write the report; return the path of report.md."""
    artifacts = Path(artifacts)
    dataset = Path(data).name if data else artifacts.resolve().name
    sets = find_feature_sets(artifacts / "stores", config.feature_sets)
    if not sets:
        raise FileNotFoundError(f"{artifacts / 'stores'}: no feature store (*.h5); run "
                                "python -m pipelines.embed / pipelines.embed_kwmlp first")
    out = artifacts / "reports" / run_name
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
        for name, paths in tqdm(sets.items(), desc="feature sets", disable=not progress):
            features = load_features(paths)
            result = evaluate(features, config, config.protocol, device, progress)
            result["stores"] = " + ".join(f"{Path(s['path']).name} ({s['kind']}, {s['dim']}-d)"
                                          for s in features.sources)
            entries.append({"dataset": dataset, "features": name, "result": result})
        notes = [f"{s}.h5 not found in {artifacts / 'stores'}" for s in STANDARD
                 if not config.feature_sets and s not in sets]
        report = write_report(out, entries, title=f"Classification heads: {run_name}",
                              settings=settings_text(config), notes=notes)
        mark_done(out, fingerprint, config, inputs)
    return report


def results_table(results_csv: Path) -> str:
    """The fold='all' rows of a results.csv as a Markdown table."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["fold"] == "all"]

    def cell(row, key):
        num = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
        std = num(row[f"{key}_std"]) if row["protocol"] == "kfold" else None
        return mean_std(num(row[key]), std)

    shown = [{"dataset": r["dataset"], "features": r["features"],
              **{k: cell(r, k) for k in ("map", "d_prime", "accuracy")}} for r in rows]
    return markdown_table(shown, [("dataset", "dataset"), ("features", "features"),
                                  ("map", "mAP"), ("d_prime", "d'"), ("accuracy", "accuracy")],
                          ["l", "l", "r", "r", "r"])


def main(argv=None) -> None:
    parser = common_parser("Train heads on every feature store and write the comparison "
                           "report.", data_required=False,
                           data_help="dataset folder, only to name the data set in the report "
                                     "(default: the --artifacts folder's name)")
    parser.add_argument("--run", default="default", help="report name: <artifacts>/reports/RUN")
    add_config_args(parser, EvaluateConfig)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(EvaluateConfig, args)
    except ValueError as e:
        parser.error(str(e))
    with clean_errors("evaluate"):
        try:
            report = run(args.data, args.artifacts, cfg, device=args.device, run_name=args.run)
        except (StoreError, FeatureSetError, FileNotFoundError, ValueError) as e:
            raise SystemExit(f"evaluate: {e}") from e
    print(results_table(report.parent / "results.csv"))
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()

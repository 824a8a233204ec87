"""KW-MLP embedding throughput, end to end from files on disk, against the matmul floor.

    python -m benchmarks.kwmlp_speed [--data ../shared/data/esc10] [--clips 400] [--runs 1x2,2x1]
                                     [--checkpoint ../shared/kwmlp/kwmlp.pth]

The stage ``pipelines.embed_kwmlp`` timed as in benchmarks.embed_speed (see its docstring for
the runs, the floor and the columns); the floor is 87.7 MFLOP per audio-second for the
authors' 12-block checkpoint.
"""
from __future__ import annotations

from benchmarks.embed_speed import main as _main


def main(argv=None) -> None:
    _main(argv, model="kwmlp")


if __name__ == "__main__":
    main()

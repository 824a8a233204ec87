"""Environment check: can bow run here, and what would make it faster?

    python -m pipelines.doctor

One line per check (bow.environment): ``ok``, ``FAIL`` or ``--`` (absent and optional, or
information), its name and what was found. Exit status 0 when everything the main job needs
works, 1 otherwise (each failing line says how to fix it).
"""
from __future__ import annotations

import argparse
import sys

from bow import __version__
from bow.environment import checks


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m pipelines.doctor",
                            description=__doc__.split("\n")[0]).parse_args(argv)
    print(f"bow {__version__}")
    broken = 0
    for c in checks():
        mark = "ok  " if c.ok else "FAIL" if c.ok is False else "--  "
        broken += c.ok is False and c.required
        print(f"{mark} {c.name:<15} {c.detail}")
    print("doctor: the main job cannot run here" if broken else "doctor: ready")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

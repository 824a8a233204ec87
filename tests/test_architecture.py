"""The layout's rules (../shared/DESIGN.md), checked on the source: imports run one way, stage
modules stay thin, the library never prints, parses arguments or exits, files stay small."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train_autoencoders", "fit_codebooks", "embed", "embed_kwmlp", "pretrain_kwmlp",
          "evaluate", "train_heads", "export_bundle", "export_hear_task", "hear_eval",
          "pretrain_audiomlp", "embed_audiomlp", "embed_opensmile")


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("bow", "pipelines"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


@pytest.mark.parametrize("stage", [s for s in STAGES if f"pipelines.{s}" in MODULES])
def test_stage_modules_are_thin(stage):
    name = f"pipelines.{stage}"
    others = {d for d in GRAPH[name] if d.startswith("pipelines.") and d.split(".")[1] in STAGES}
    assert not others, f"{name} imports other stages: {others}"
    classes = [n.name for n in ast.parse(MODULES[name].read_text()).body
               if isinstance(n, ast.ClassDef)]
    assert len(classes) <= 1 and all(c.endswith("Config") for c in classes), classes


def test_the_library_does_not_print_parse_arguments_or_exit():
    for name, path in MODULES.items():
        if name.startswith("bow"):
            text = path.read_text()
            for pattern in (r"(?<![\w.])print\(", r"\bargparse\b", r"\bSystemExit\b"):
                assert not re.search(pattern, text), f"{path}: {pattern}"


def test_source_files_stay_small():
    for folder in ("bow", "pipelines", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            assert len(path.read_text().splitlines()) <= 400, path

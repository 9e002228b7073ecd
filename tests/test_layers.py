"""The layout's one rule: imports point down (faces -> methods -> training/metrics -> diffusion/data -> base), and a
method folder never imports another method (what two methods share moves down into the engine)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "atelier"
RANKS = {"cli": 5, "commands": 5, "demo": 5, "registry": 5, "__main__": 5, "app": 5,
         "methods": 4, "training": 3, "metrics": 3, "diffusion": 2, "data": 2,
         "config": 1, "weights": 1, "utils": 1, "errors": 1, "environment": 1, "__init__": 1}


def unit(module: str) -> tuple[str, ...]:
    """The folder a module belongs to: atelier.methods.cfld.sample -> (methods, cfld); atelier.data.pose -> (data,)."""
    parts = module.split(".")[1:]
    return tuple(parts[:2]) if parts[0] == "methods" else (parts[0],)


def imports() -> list[tuple[str, str]]:
    """(importing module, imported atelier module) for every import statement in the package, lazy ones included."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("atelier", *path.relative_to(PACKAGE).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("atelier"):
                is_module = [(PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file() for a in node.names]
                targets = [node.module] if node.module != "atelier" else [
                    f"atelier.{a.name}" if module_ else "atelier" for a, module_ in zip(node.names, is_module)]
                found += [(module, target) for target in targets]
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("atelier.")]
    return found


def test_every_top_level_module_has_a_rank() -> None:
    tops = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.glob("*")
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").is_file())}
    assert tops <= set(RANKS), f"give {sorted(tops - set(RANKS))} a layer in tests/test_layers.py"


def test_imports_point_down_and_methods_do_not_import_each_other() -> None:
    wrong = []
    for source, target in imports():
        if target == "atelier":
            continue
        same_unit = unit(source) == unit(target)
        down = RANKS[unit(target)[0]] < RANKS[unit(source)[0]]
        peers = RANKS[unit(target)[0]] == RANKS[unit(source)[0]] in (1, 5)  # faces use faces, base uses base
        if not (same_unit or down or peers):
            wrong.append(f"{source} imports {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(set(wrong)))

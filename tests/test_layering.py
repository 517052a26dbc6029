"""The library's layers import downwards only, and no module imports itself back through others.

Order, bottom to top: the base modules at the package root (errors, files, configs, metrics,
export_format), then data -> models -> training -> distill -> serving -> export -> tasks ->
pipeline -> cli; only cli reads absl flags. The exporter checks what it wrote with serving's predictor, so export sits above
serving; a task owns its whole job, export included, so tasks sit above export.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bertdistill"
LAYERS = ["", "data", "models", "training", "distill", "serving", "export", "tasks", "pipeline", "cli"]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def imports(path: pathlib.Path) -> set[str]:
    """Every bertdistill module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bertdistill")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bertdistill"):
            for alias in node.names:  # `from bertdistill.data import tokenization` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if MODULES.get(candidate) else node.module)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def test_every_module_belongs_to_a_known_layer():
    assert {layer(name) for name in MODULES} <= set(LAYERS)
    assert all((PACKAGE / name / "__init__.py").exists() for name in LAYERS if name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_downwards(name):
    upward = sorted(other for other in GRAPH[name] if other in MODULES and other != "bertdistill"
                    and LAYERS.index(layer(other)) > LAYERS.index(layer(name)))
    assert not upward, f"{name} ({layer(name) or 'base'}) imports from above: {upward}"


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(GRAPH.get(name, ())):
            if other not in MODULES or other == "bertdistill" or other.count(".") == 1 and other[12:] in LAYERS:
                continue
            assert state.get(other) != 1, f"import cycle: {' -> '.join(path + [other])}"
            if other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_packages_say_what_they_own():
    for name in LAYERS[1:]:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 8, f"bertdistill/{name}/__init__.py needs a docstring saying what it owns"


def absl_flag_imports(path: pathlib.Path) -> set[str]:
    """The absl flag and app modules `path` imports (absl's logging is fine anywhere)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in ("absl.flags", "absl.app")}
        elif isinstance(node, ast.ImportFrom) and node.module in ("absl", "absl.flags", "absl.app"):
            found |= {f"absl.{alias.name}" for alias in node.names if alias.name in ("flags", "app")} | (
                {node.module} if node.module != "absl" else set())
    return found


def test_only_cli_reads_flags():
    readers = {name: sorted(absl_flag_imports(path)) for name, path in MODULES.items() if absl_flag_imports(path)}
    assert readers and all(layer(name) == "cli" for name in readers), readers

"""The layout of the code: no import cycles (module or package level, imports inside
functions included), a top level that holds only what a user imports first, nothing
imports the console scripts, and a README Layout section that names only what exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "attnedit"
TOP_LEVEL = {"__init__", "api", "errors", "config", "columns"}


def module_name(path: Path) -> str:
    return ".".join(("attnedit", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(source: str, name: str, package: str) -> set[str]:
    """Every attnedit module an import statement of ``source`` (module ``name`` of
    ``package``) names, wherever it stands (module level, functions, methods), relative
    imports resolved; ``from a import b`` names both ``a`` and ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base.startswith("attnedit"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("attnedit"))
    return found - {name}


def imports(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return {i for i in imports_of(path.read_text(), name, package) if i in MODULES}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path, node, target]
            if target not in state and (cycle := visit(target, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_modules():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        for target in targets:
            if package_of(module) != package_of(target):
                packages.setdefault(package_of(module), set()).add(package_of(target))
    assert find_cycle(packages) is None, " -> ".join(find_cycle(packages))


def test_the_cycle_check_sees_imports_inside_functions():
    """A cycle closed only by an import inside a function, or by a relative one, is found."""
    late = imports_of("def late():\n    from attnedit.a import x\n", "attnedit.b", "attnedit")
    relative = imports_of("from .a import x\n", "attnedit.b", "attnedit")
    for found in (late, relative):
        graph = {"attnedit.a": {"attnedit.b"}, "attnedit.b": found & {"attnedit.a"}}
        assert find_cycle(graph) == ["attnedit.a", "attnedit.b", "attnedit.a"]


def test_no_import_hides_from_the_check():
    """Imports by name at run time (importlib) would be edges this test cannot see."""
    hidden = [f"{name}" for name, path in MODULES.items() if re.search(r"\bimport_module\(|__import__\(", path.read_text())]
    assert not hidden


def test_the_top_level_holds_only_what_a_user_imports_first():
    top = {p.stem for p in SRC.glob("*.py")}
    assert top <= TOP_LEVEL and len(top) <= 6, sorted(top - TOP_LEVEL)


def test_every_report_is_built_from_the_report_modules():
    assert {"attnedit.report.studies", "attnedit.report.render", "attnedit.report.sad", "attnedit.report.comparison",
            "attnedit.report.dcag", "attnedit.report.plots", "attnedit.report.timing",
            "attnedit.report.reference"} <= set(MODULES)


def test_nothing_imports_the_console_scripts():
    offenders = sorted(m for m, targets in GRAPH.items()
                       if not m.startswith("attnedit.cli") and any(t.startswith("attnedit.cli") for t in targets))
    assert not offenders


def test_every_console_script_is_a_module_of_cli():
    scripts = re.findall(r'^attnedit-(\w+) = "attnedit\.cli\.(\w+):main"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert len(scripts) == 9 and all(a == b and f"attnedit.cli.{b}" in MODULES for a, b in scripts)


def layout_paths() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"`((?:src|conf|experiments|tests|benchmarks|results)/[^`\s]*)`", section)))


def test_the_readme_layout_names_only_what_exists():
    paths = layout_paths()
    assert len(paths) >= 15, paths  # the section names the packages, not just a few files
    assert [p for p in paths if not (REPO / p.rstrip("/")).exists()] == []
    named = {p.rstrip("/") for p in paths}
    packages = {str(p.relative_to(REPO)) for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= named, sorted(packages - named)


HISTORY = re.compile(r"\b[Ii]ssues? \d+(\.\d+)?\b|\(issue|\bused to be (written|named)\b|\bnamed \w+ before\b")


@pytest.mark.parametrize("folder", ["src", "conf", "tests", "experiments", "benchmarks"])
def test_no_history_in_code_and_configs(folder):
    """Comments say why, not what happened before: no issue numbers in code, configs or tests."""
    found = []
    for path in sorted((REPO / folder).rglob("*")):
        if path.suffix in (".py", ".yaml", ".sh") and path != Path(__file__):
            found += [f"{path.relative_to(REPO)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if HISTORY.search(line)]
    assert not found, found

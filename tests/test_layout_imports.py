"""Imports run one way down the data flow: cli -> dump/restore -> infect/files/mm/task -> images/kernel/arch.

Why a test: the folders are the stages of `/proc + parasite -> dump ->
images -> restore -> restorer`; a module that imports from a stage above it
ties a lower stage to a higher one, and the layout stops telling the truth.
errors, faults, progress and codecache are leaves every stage may use.
"""

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"

RANKS = {
    "cli": 4, "check": 4, "show": 4, "__main__": 4,
    "dump": 3, "restore": 3, "convert": 3,
    "infect": 2, "files": 2, "mm": 2, "task": 2,
    "images": 1, "kernel": 1, "arch": 1,
    "errors": 0, "faults": 0, "progress": 0, "codecache": 0,
}
# Stages of one rank that must not lean on each other either.
APART = ({"dump", "restore", "convert"},)


def stage(module: str) -> str:
    """'runtime.infect.session' -> 'infect'."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runtime"):
            if node.module == "runtime":
                found.update(f"runtime.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("runtime."))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_runtime_module_belongs_to_a_known_stage():
    unknown = sorted(module_name(p) for p in RUNTIME.rglob("*.py")
                     if module_name(p) != "runtime" and stage(module_name(p)) not in RANKS)
    assert not unknown, f"modules outside the stages this test knows (add the stage to RANKS): {unknown}"


def test_no_module_imports_from_a_stage_above_its_own():
    upward = []
    for path in sorted(RUNTIME.rglob("*.py")):
        name = module_name(path)
        if name == "runtime":
            continue
        own = stage(name)
        for target in sorted(imported_modules(path)):
            other = stage(target)
            if RANKS[other] > RANKS[own] or (other != own and any({own, other} <= group for group in APART)):
                upward.append(f"{name} imports {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)

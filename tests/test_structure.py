"""The layering the project agreed on: no import cycles, imports at the top, one place per model.

These read the source (``ast``), so a violation names the file and line.
"""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mrijax"
# Optional dependencies may be imported lazily, where they are needed.
OPTIONAL = ("h5py", "nibabel", "nilearn", "pydicom", "torch", "matplotlib", "safetensors", "skimage", "pywt")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imported(node, current: str):
    """The mrijax modules a (top-level) import statement imports."""
    out = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names if a.name.split(".")[0] == "mrijax"]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mrijax":
        for a in node.names:
            candidate = f"{node.module}.{a.name}"
            is_module = (ROOT / pathlib.Path(*candidate.split("."))).with_suffix(".py").exists() or \
                (ROOT / pathlib.Path(*candidate.split("."))).is_dir()
            out.append(candidate if is_module else node.module)
    return [m for m in out if m != current]


def test_no_import_cycle_between_library_modules():
    graph = {}
    for path in _modules():
        name = _module_name(path)
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:
            deps.update(_imported(node, name))
        # A package's __init__ re-exports its modules; importing a module of the package is not a
        # dependency of the package on itself.
        graph[name] = {d for d in deps if not d.startswith(name + ".")}

    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state and node != "mrijax" and not node.endswith(".data"):
            visit(node, [node])


def test_imports_of_our_own_modules_are_at_the_top():
    bad = []
    for path in _modules() + sorted((ROOT / "experiments").glob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(id(n) for n in tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "mrijax" for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif not any(n.split(".")[0] in OPTIONAL for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} ({names[0]})")
    assert not bad, "function-local imports (only optional dependencies may be lazy): " + ", ".join(bad)


def test_models_are_special_cased_only_in_their_own_files():
    bad = []
    for path in list(PACKAGE.rglob("*.py")) + list((ROOT / "experiments").rglob("*.py")):
        if path.parent.name == "models":
            continue
        text = path.read_text()
        for word in ("Automap", "isinstance(model", "isinstance(net"):
            for i, line in enumerate(text.splitlines(), 1):
                if word in line:
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "model special cases outside mrijax/models:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", [p for p in _modules() if not p.name.startswith("_") or p.name == "__init__.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_public_module_declares_all_and_its_names_exist(path):
    module = importlib.import_module(_module_name(path))
    assert hasattr(module, "__all__"), f"{path.relative_to(ROOT)} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{path.relative_to(ROOT)}: __all__ names {missing} that do not exist"


def test_import_mrijax_exposes_the_public_modules():
    import mrijax
    for name in ("attacks", "cs", "dc", "fourier", "hallucination", "masks", "metrics", "models", "operators",
                 "train", "checkpoint", "data"):
        assert hasattr(mrijax, name), name

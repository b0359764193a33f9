"""The README is run, not just read: its Python executes, every name it mentions exists.

* Every ```python block of README.md runs, in order and in one namespace, in a temporary
  working directory (the tutorial is sized to take seconds on a CPU).
* Every dotted ``mrijax.…`` / ``experiments.…`` name in the README and in ``docs/`` resolves
  (the longest importable module prefix, then attributes), as do the ``import`` lines and the
  ``python -m MODULE`` / ``python FILE.py`` commands of its code blocks.
* The signatures the README's library table quotes, ``name(arg, kw=...)``, name real
  parameters; every relative link of the README and of ``docs/`` points at a file (and heading).
* The README stays a guide: at most 15 KB; its test command is exactly the one ``.ci/run`` runs.
"""

import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
MAX_README_BYTES = 15 * 1024

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# A dotted project name, not a placeholder such as ``experiments.<name>``.
_DOTTED = re.compile(r"(?<![\w./-])((?:mrijax|experiments)(?:\.\w+)+)(?![\w<-]|\.\w)")
_PY_M = re.compile(r"\bpython3? -m ((?:\w+\.)*\w+)(?![\w.<])")
_PY_FILE = re.compile(r"\bpython3? ((?:[\w.-]+/)*[\w.-]+\.py)\b")
_FROM_IMPORT = re.compile(r"^\s*from ([\w.]+) import \(?([\w, ]+)\)?", re.M)
_IMPORT = re.compile(r"^\s*import ([\w.]+(?:\s*,\s*[\w.]+)*)", re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text(path=README):
    return path.read_text(encoding="utf-8")


def _blocks(text, languages):
    return [body for lang, body in _FENCE.findall(text) if lang in languages]


def _resolve(dotted):
    """Import the longest module prefix of ``dotted``, then getattr the rest; return the object."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name) and e.name != name:
                raise  # the module exists but one of its own imports is missing
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise AttributeError(f"{dotted}: {'.'.join(parts[:parts.index(attr)])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"{dotted}: no importable prefix")


def _names_in(text):
    return sorted(set(_DOTTED.findall(text)))


def test_readme_is_at_most_15_kb():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, (f"README.md is {size} bytes, over {MAX_README_BYTES}: move measurements "
                                      "to docs/results/, timings to docs/performance.md")


def test_readme_runs_the_test_command_of_ci():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip().startswith("python -m pytest")]
    assert len(ci) == 1, ci
    bash = "\n".join(_blocks(_text(), {"bash", "sh", "shell"}))
    assert "pip install -e '.[test]' && " + ci[0] in bash
    assert "pip install -e . && python -m experiments.worst_case --out_dir=runs/worst_case" in bash


def test_python_blocks_of_the_readme_run(tmp_path, monkeypatch, capsys):
    blocks = _blocks(_text(), {"python", "py"})
    assert blocks, "the README should have a Python tutorial"
    code = "\n".join(blocks)
    if "mni" in code:
        pytest.importorskip("nilearn", reason="the MNI152 template ships with nilearn (in a checkout: pip install -e '.[data]')")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
    out = capsys.readouterr().out
    # The tutorial prints the PSNR change (perturbed - clean, negative = worse) of a finite attack.
    match = re.search(r"change ([+-]?\d+\.\d+) dB", out)
    assert match, out
    assert -60.0 < float(match.group(1)) < 60.0


def test_imports_and_commands_in_readme_code_blocks_resolve():
    text = _text()
    code = "\n".join(_blocks(text, {"python", "py", "bash", "sh", "shell", ""}))
    checked = []
    for module, names in _FROM_IMPORT.findall(code):
        for name in (n.strip() for n in names.split(",")):
            if name:
                _resolve(f"{module}.{name}")
                checked.append(f"{module}.{name}")
    for modules in _IMPORT.findall(code):
        for module in (m.strip() for m in modules.split(",")):
            importlib.import_module(module)
            checked.append(module)
    for module in _PY_M.findall(code):
        if module == "pytest":
            continue
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
        importlib.import_module(module)
        checked.append(module)
    for path in _PY_FILE.findall(code):
        assert (ROOT / path).is_file(), f"python {path}: no such file"
    assert any(c.startswith("experiments.") for c in checked), checked


@pytest.mark.parametrize("page", [README] + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_dotted_names_resolve(page):
    missing = []
    for name in _names_in(_text(page)):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name} ({e})")
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {missing}"


def test_readme_names_real_modules_and_signatures():
    """The library table: each row's module, the attributes it quotes and their parameters."""
    rows = [line for line in _text().splitlines() if line.startswith("| `mrijax.")]
    assert len(rows) >= 10, rows
    for row in rows:
        module_name = re.match(r"\| `([\w.]+)`", row).group(1)
        module = importlib.import_module(module_name)
        for span in re.findall(r"`([^`]+)`", row)[1:]:
            call = re.fullmatch(r"(\w+)\((.*)\)", span)
            name = call.group(1) if call else span
            if not re.fullmatch(r"[A-Za-z_]\w*", name) or name in {"A"}:
                continue
            assert hasattr(module, name), f"README: {module_name}.{name} does not exist"
            if call and call.group(2).strip():
                params = inspect.signature(getattr(module, name)).parameters
                for arg in call.group(2).split(","):
                    arg = arg.split("=")[0].strip()
                    assert arg in params, f"README: {module_name}.{name} has no parameter {arg!r}"


def _slug(heading):
    """GitHub's anchor of a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


@pytest.mark.parametrize("page", [README] + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings(page):
    broken = []
    for target in _LINK.findall(_text(page)):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
            continue
        if anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"

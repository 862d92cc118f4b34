"""framegen as a library: one namespace, layers that import only downward, and the public API's documented examples.

The examples of docs/API.md and the namespace checks run in a fresh Python process whose working folder holds its own
``models.py``, ``toolkit/`` and ``runtimes/``, as a user's ML repository does: framegen must neither import them nor
be shadowed by them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

LAYERS = {"models": 0, "exporters": 1, "runtimes": 1, "toolkit": 2}
PACKAGES = tuple(LAYERS)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports included), with its line; plus module
    names handed to ``importlib.import_module`` as string literals."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r"framegen(\.\w+)+", node.value)):
            found.append((node.lineno, node.value))
    return found


def test_every_import_goes_down_a_layer():
    """models at the bottom; exporters and runtimes use only models; toolkit uses all three. No bare
    ``models``/``toolkit``... imports: those would pick up a user's own packages."""
    bad = []
    for package, level in LAYERS.items():
        for path in _modules(package):
            for line, name in _imports(path):
                head = name.split(".")[0]
                if head in PACKAGES:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: bare import {name!r} (use framegen.{name})")
                    continue
                if head != "framegen" or name.count(".") < 1:
                    continue
                target = name.split(".")[1]
                if target not in LAYERS:
                    continue
                if target != package and LAYERS[target] >= level:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {package} imports {name} (layer "
                               f"{target} is not below {package})")
    assert not bad, "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check above can fail: an exporters module importing the runtimes is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from framegen.runtimes.mil.program import run_mlpackage\n")
    names = [n for _, n in _imports(probe)]
    assert "framegen.runtimes.mil.program" in names


#: The toolkit's sub-packages, bottom to top: a module may import its own sub-package and the ones below it.
TOOLKIT_LAYERS = ("common", "inputs", "frames", "compare", "bench", "export", "parity", "demo", "serve", "api",
                  "testing", "cli", "commands")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the framegen modules it imports (at any depth), over every product package."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in _modules(package):
            mod = _module_name(path)
            deps = set()
            for _, name in _imports(path):
                parts = name.split(".")
                if parts[0] != "framegen" or len(parts) < 3 or parts[1] not in PACKAGES:
                    continue
                for cut in range(len(parts), 2, -1):
                    candidate = Path(*parts[1:cut])
                    if (ROOT / candidate).with_suffix(".py").is_file() or (ROOT / candidate / "__init__.py").is_file():
                        deps.add(".".join(parts[1:cut]))
                        break
            graph[mod] = deps - {mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circles_anywhere_in_the_product():
    """Every module of models, exporters, runtimes and toolkit, the CLI included."""
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


#: runtimes a framegen module may load lazily, inside a function, so that ``--help`` and ``import framegen`` stay fast
HEAVY = {"torch", "onnxruntime", "coremltools", "openvino", "tritonclient", "pytriton", "onnx", "cv2", "av", "scipy",
         "nncf"}
#: the CLI layer imports the API (and numpy with it) inside each command, so that ``--help`` loads none of it
CLI_LAYER = ("toolkit/cli.py", "toolkit/commands/")


def _top_level(path: Path) -> tuple[set[str], set[str]]:
    """The framegen modules and the external top-level packages a file imports at module level (inside module-level
    ``try`` / ``if`` too, ``TYPE_CHECKING`` blocks aside)."""
    internal, external = set(), set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                for block in (node.body, node.orelse, *[h.body for h in getattr(node, "handlers", [])],
                              getattr(node, "finalbody", [])):
                    visit(block)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names] if not node.level
                         else [])
                for name in names:
                    (internal if name.startswith("framegen.") else external).add(name.split(".")[0]
                                                                                  if not name.startswith("framegen.")
                                                                                  else name)
    visit(ast.parse(path.read_text()).body)
    return internal, external


def _heavy_modules() -> set[str]:
    """Product modules that load a heavy runtime when imported (themselves or through their top-level imports)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in _modules(pkg)}
    tops = {m: _top_level(p) for m, p in files.items()}
    deps = {m: {d[len("framegen."):] for d in internal} & set(files) for m, (internal, _) in tops.items()}
    heavy = {m for m, (_, external) in tops.items() if external & HEAVY}
    while True:
        more = {m for m in files if m not in heavy and deps[m] & heavy}
        if not more:
            return heavy
        heavy |= more


def test_framegen_imports_sit_at_the_top_unless_they_load_a_heavy_runtime():
    """A function-level ``from framegen... import`` is allowed only for a module that loads torch, onnxruntime, ...
    at import (and in the CLI layer, which keeps ``--help`` free of numpy); anything else hides the import graph."""
    heavy = _heavy_modules()
    hidden = []
    for package in PACKAGES:
        for path in _modules(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(CLI_LAYER):
                continue
            tree = ast.parse(path.read_text())
            for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("framegen."):
                        targets = {f"{node.module}.{a.name}"[len("framegen."):] for a in node.names}
                        targets = {t for t in targets if t in _graph_modules()} or {node.module[len("framegen."):]}
                        if not targets & heavy:
                            hidden.append(f"{rel}:{node.lineno} {node.module}")
    assert not hidden, "\n".join(sorted(set(hidden)))


def _graph_modules() -> set[str]:
    return {_module_name(p) for pkg in PACKAGES for p in _modules(pkg)}


def test_help_loads_no_numpy_and_no_runtime():
    watched = sorted(HEAVY | {"numpy"})
    code = ("import sys\nfrom framegen.toolkit.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n"
            f"    pass\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {watched!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def _toolkit_layer(module: str) -> int:
    return TOOLKIT_LAYERS.index(module.split(".")[1])


def test_toolkit_sub_packages_import_only_down():
    """common < inputs < frames < compare < bench < export < parity < demo/serve < api < testing < cli: the map in
    DEVELOPERS.md."""
    bad = []
    for mod, deps in _graph(("toolkit",)).items():
        if mod == "toolkit":
            continue
        for dep in deps:
            if dep.startswith("toolkit.") and dep.split(".")[1] != mod.split(".")[1] and \
                    _toolkit_layer(dep) > _toolkit_layer(mod):
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_every_toolkit_module_sits_in_a_known_sub_package():
    stray = [m for m in _graph(("toolkit",)) if m != "toolkit" and m.split(".")[1] not in TOOLKIT_LAYERS]
    assert not stray, stray


def test_no_private_names_imported_across_modules():
    bad = []
    for package in PACKAGES:
        for path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("framegen."):
                    bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name} from {node.module}"
                            for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not bad, "\n".join(bad)


def test_every_product_package_is_listed_for_installation():
    """A sub-package missing from pyproject's ``packages`` works in an editable install and vanishes from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"framegen." + ".".join(init.parent.relative_to(ROOT).parts)
             for package in PACKAGES for init in (ROOT / package).rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_installed_files_hold_no_top_level_package_but_framegen():
    # An in-tree build leaves framegen.egg-info in the checkout, which is on sys.path too: the installed
    # distribution is the one with a RECORD.
    dist = next(d for d in importlib.metadata.distributions(name="framegen") if d.read_text("RECORD"))
    files = [str(f) for f in dist.files or []]
    finders = [f for f in files if f.startswith("__editable__") and f.endswith("_finder.py")]
    if finders:  # pip install -e .: the finder maps top-level names to folders
        text = Path(dist.locate_file(finders[0])).read_text()
        mapping = ast.literal_eval(re.search(r"MAPPING[^=]*=\s*(\{.*?\})", text, re.S).group(1))
        assert set(mapping) == {"framegen"}, mapping
        return
    tops = {f.split("/")[0] for f in files if not f.startswith(("..", "framegen-")) and "/" in f}
    assert tops == {"framegen"}, tops
    assert not [f for f in files if "/" not in f and f.endswith(".py")]


def _hostile_folder(tmp_path: Path) -> Path:
    """A folder like a user's ML repository: its own models.py, toolkit/ and runtimes/ packages."""
    work = tmp_path / "user_repo"
    work.mkdir()
    (work / "models.py").write_text("OWNER = 'user'\n")
    for pkg in ("toolkit", "runtimes"):
        (work / pkg).mkdir()
        (work / pkg / "__init__.py").write_text("OWNER = 'user'\n")
    return work


def _run(code: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_framegen_imports_beside_a_users_own_models_toolkit_and_runtimes(tmp_path):
    work = _hostile_folder(tmp_path)
    code = textwrap.dedent("""
        import json, sys
        import framegen, framegen.toolkit.cli, framegen.runtimes.registry, framegen.models.contract
        import models, toolkit, runtimes
        rows = framegen.backends()
        print(json.dumps({"user": [models.OWNER, toolkit.OWNER, runtimes.OWNER], "version": framegen.__version__,
                          "api": sorted(framegen.__dir__()), "backends": [r.name for r in rows],
                          "framegen_file": framegen.__file__}))
    """)
    proc = _run(code, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["user"] == ["user"] * 3
    assert {"export", "render", "render_frames", "parity", "golden_write", "golden_check", "bench",
            "backends"} <= set(got["api"])
    assert "torch-cpu" in got["backends"]
    cli = subprocess.run(["framegen", "--version"], cwd=work, capture_output=True, text=True, timeout=120,
                         check=False)
    assert cli.returncode == 0 and cli.stdout.strip() == f"framegen {got['version']}", cli.stderr


def _api_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), re.S)


def test_every_public_function_has_an_example_and_a_docstring():
    import framegen.toolkit.api as api

    text = "\n".join(_api_examples())
    functions = [n for n in api.__all__ if callable(getattr(api, n)) and not isinstance(getattr(api, n), type)]
    missing = [n for n in functions if f"framegen.{n}(" not in text]
    assert not missing, f"docs/API.md has no example for {missing}"
    undocumented = [n for n in functions if not (getattr(api, n).__doc__ or "").strip()]
    assert not undocumented


@pytest.mark.slow
def test_api_examples_run_from_a_users_repository(tmp_path):
    """docs/API.md, every block in order, in one fresh process inside a folder with its own models.py etc."""
    work = _hostile_folder(tmp_path)
    code = "\n\n".join(_api_examples()) + "\n\nimport models\nassert models.OWNER == 'user'\nprint('API-OK')\n"
    proc = _run(code, work, timeout=900)
    assert proc.returncode == 0 and "API-OK" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-4000:])
    assert (work / "bundle" / "manifest.json").is_file() and (work / "out.mp4").is_file()

"""The house rules that keep the library composable, checked on the source itself."""

import ast
import dataclasses
import os

from conftest import ROOT
from jaxfool.config import RunConfig, default, fields_of_kind
from jaxfool.encodings import DirectParams
from jaxfool.encodings.cppn import CPPNParams

PACKAGE = os.path.join(ROOT, "jaxfool")


def _imports(path: str) -> set[str]:
    """Every module ``path`` imports, at any depth of the file."""
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_config_is_a_leaf():
    imported = _imports(os.path.join(PACKAGE, "config.py"))
    assert not [m for m in imported if m == "jaxfool" or m.startswith("jaxfool.")], imported


def test_only_the_cli_imports_the_cli():
    users = [os.path.relpath(p, ROOT) for p in _modules() if "jaxfool.cli" in _imports(p) and not p.endswith("cli.py")]
    assert users == []


def test_traced_fields_are_exactly_what_params_carry():
    encoding_fields = {f.name for cls in (DirectParams, CPPNParams) for f in dataclasses.fields(cls)}
    # generations -> max_generation, threshold -> log_threshold, stop_when_fooled -> stop
    assert set(fields_of_kind(RunConfig, "traced")) == encoding_fields | {"generations", "threshold", "stop_when_fooled"}
    assert set(fields_of_kind(RunConfig, "lanes")) == {"seed", "seeds"}


def test_defaults_are_written_once():
    for cls in (DirectParams, CPPNParams):
        for f in dataclasses.fields(cls):
            assert getattr(cls(), f.name) == default(f.name), (cls.__name__, f.name)
    static = RunConfig().static_key()
    assert RunConfig(mutation_rate=0.3, threshold=0.99, generations=5).static_key() == static
    assert RunConfig(batch=100).static_key() != static and RunConfig(crossover_rate=0.5).static_key() != static


def _reads_mnist_implicitly(func: ast.FunctionDef) -> bool:
    """Whether ``func`` calls ``load_mnist(split)`` with no directory, without setting
    ``JAXFOOL_DATA`` itself (``monkeypatch.setenv`` / ``delenv``) as the data tests do."""
    calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)]
    bare = any(getattr(c.func, "id", getattr(c.func, "attr", None)) == "load_mnist" and len(c.args) < 2 and not c.keywords for c in calls)
    sets_env = any(getattr(c.func, "attr", None) in ("setenv", "delenv") and c.args
                   and isinstance(c.args[0], ast.Constant) and c.args[0].value == "JAXFOOL_DATA" for c in calls)
    return bare and not sets_env


def test_tests_read_mnist_only_through_the_fixture():
    """A test that reads MNIST from wherever the environment points fails on a fresh clone
    instead of skipping (issue 28): every test gets its directory from ``mnist_dir``."""
    offenders = []
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(ROOT, "tests", name)).read())
            offenders += [f"{name}:{f.lineno} {f.name}" for f in ast.walk(tree)
                          if isinstance(f, ast.FunctionDef) and _reads_mnist_implicitly(f)]
    assert offenders == []


def test_the_check_itself_sees_a_bare_load():
    bad = ast.parse("def test_x(lenet):\n    images = load_mnist('test').images\n").body[0]
    patched = ast.parse("def test_y(monkeypatch):\n    monkeypatch.setenv('JAXFOOL_DATA', 'd')\n    load_mnist('train')\n").body[0]
    good = ast.parse("def test_z(mnist_dir):\n    load_mnist('test', mnist_dir)\n").body[0]
    assert [_reads_mnist_implicitly(f) for f in (bad, patched, good)] == [True, False, False]

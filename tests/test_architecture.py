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

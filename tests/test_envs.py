"""The conda environments of the rules (`snakemake --sdm conda`) hold what each rule's script imports.

No conda channel is reachable here, so the environments cannot be built; instead the import closure of
every rule's script is computed statically: every ``import``/``from ... import`` anywhere in the script
(function bodies included: a lazy import still runs), followed recursively into the kappaflow modules it
reaches, keeping the third-party top-level names (the standard library is ``sys.stdlib_module_names``).
Each name must be provided by a package of the env file the rule's ``conda:`` directive names.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
RULES = REPO / "workflow" / "rules"

#: conda package -> the top-level module names it provides (default: the name, '-' -> '_')
CONDA_PROVIDES = {
    "python": set(),
    "qe": set(),  # pw.x, no Python module
    "pyyaml": {"yaml"},
    "scikit-learn": {"sklearn"},
    "pytables": {"tables"},
}

_HEADER = re.compile(r"^(\s*)(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_USE = re.compile(r"^(\s*)use rule (\w+) as (\w+) with\s*:", re.M)
_DIRECTIVE = re.compile(r"^\s+(conda|script)\s*:\s*\n\s+\"([^\"]+)\"", re.M)


def rule_envs_and_scripts() -> dict[str, tuple[Path, Path]]:
    """rule -> (env file, script) for every rule of workflow/rules/*.smk with a script."""
    found: dict[str, tuple[Path, Path]] = {}
    uses = []
    for smk in sorted(RULES.glob("*.smk")):
        text = smk.read_text()
        starts = sorted([(m.start(), m.group(2)) for m in _HEADER.finditer(text)]
                        + [(m.start(), None) for m in _USE.finditer(text)])
        uses += [(m.group(2), m.group(3)) for m in _USE.finditer(text)]
        for (start, name), (end, _) in zip(starts, starts[1:] + [(len(text), None)]):
            if name is None:
                continue
            block = dict((k, v) for k, v in _DIRECTIVE.findall(text[start:end]))
            if "script" in block:
                assert "conda" in block, f"{smk.name}: rule {name} runs a script without a conda: directive"
                found[name] = ((smk.parent / block["conda"]).resolve(), (smk.parent / block["script"]).resolve())
    for base, derived in uses:
        if base in found:
            found[derived] = found[base]
    return found


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, module: str | None) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    names = set()
    package = module if path.name == "__init__.py" else (module.rpartition(".")[0] if module else None)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            names.add(target)
            for alias in node.names:  # `from kappaflow import dft`: a submodule
                if _module_file(f"{target}.{alias.name}"):
                    names.add(f"{target}.{alias.name}")
    return names


def import_closure(script: Path) -> dict[str, str]:
    """Third-party top-level module -> one kappaflow file (or the script) that imports it."""
    third_party: dict[str, str] = {}
    seen: set[str] = set()
    todo = [(script, None)]
    while todo:
        path, module = todo.pop()
        for name in sorted(_imports(path, module)):
            top = name.split(".")[0]
            if top == "kappaflow":
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                    sub = ".".join(parts[:i])
                    file = _module_file(sub)
                    if file and sub not in seen:
                        seen.add(sub)
                        todo.append((file, sub))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, str(path.relative_to(REPO)))
    return third_party


def env_provides(env_path: Path) -> set[str]:
    deps = yaml.safe_load(env_path.read_text())["dependencies"]
    names = {re.split(r"[=<>!\s]", d, maxsplit=1)[0].strip().lower() for d in deps if isinstance(d, str)}
    for d in deps:
        if isinstance(d, dict) and "pip" in d:
            names |= {re.split(r"[=<>!\s\[]", p, maxsplit=1)[0].strip().lower() for p in d["pip"]}
    provided = set()
    for name in names:
        provided |= CONDA_PROVIDES.get(name, {name.replace("-", "_")})
    return provided


RULE_ENVS = rule_envs_and_scripts()


def test_every_script_rule_is_found():
    """The parser of the .smk files sees the rules the workflow runs (a silent miss would test nothing)."""
    assert {"relax", "dft", "sow", "reap", "bte", "report", "cost", "structure", "relax_input",
            "scaling_run_mpi", "scaling_run_serial", "train", "infer", "stability_gate", "plan"} <= set(RULE_ENVS)
    closure = import_closure(RULE_ENVS["reap"][1])
    assert {"numpy", "phono3py", "phonopy"} <= set(closure)  # the closure follows lazy imports too


@pytest.mark.parametrize("rule", sorted(RULE_ENVS))
def test_rule_env_holds_the_import_closure_of_its_script(rule):
    env, script = RULE_ENVS[rule]
    assert env.is_file(), f"rule {rule}: env file {env} does not exist"
    closure = import_closure(script)
    missing = {name: where for name, where in closure.items() if name not in env_provides(env)}
    assert not missing, (f"rule {rule} ({script.relative_to(REPO)}) imports {sorted(missing)} "
                         f"(e.g. {missing}) but {env.relative_to(REPO)} does not provide them")


@pytest.mark.parametrize("rule", ["relax", "dft", "scaling_run_mpi", "scaling_run_serial"])
def test_pw_x_rules_have_quantum_espresso(rule):
    env, _ = RULE_ENVS[rule]
    deps = yaml.safe_load(env.read_text())["dependencies"]
    assert any(isinstance(d, str) and re.split(r"[=<>]", d)[0] == "qe" for d in deps), (rule, env)

"""The SAM template and what `sam build` ships: the function's guards, and a code location whose
pinned requirements cover every runtime dependency (a new one in pyproject.toml must reach the Lambda)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation's short tags (!Ref, !Sub, !GetAtt, ...) as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    assert isinstance(node, yaml.MappingNode)
    return {suffix: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _tag)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path.name}: {line} is not an exact pin"
        pins[_norm(req.name)] = spec[0].version
    return pins


def _function() -> dict[str, Any]:
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    fn: dict[str, Any] = template["Resources"]["LoaderFunction"]
    return fn


def test_the_function_allows_its_own_recursion_and_is_bounded() -> None:
    props = _function()["Properties"]
    assert props["RecursiveLoop"] == "Allow"
    assert props["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
    assert props["Timeout"] == 900
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    invoke = [s for s in props["Policies"][0]["Statement"] if s["Action"] == "lambda:InvokeFunction"]
    resources = [s["Resource"]["Sub"] for s in invoke]
    assert any(r.endswith("-loader") for r in resources) and any(r.endswith("-loader:*") for r in resources)


def test_the_code_location_ships_only_the_packages_and_pinned_runtime_deps() -> None:
    fn = _function()
    assert fn["Metadata"]["BuildMethod"] == "makefile"
    code = (TEMPLATE.parent / fn["Properties"]["CodeUri"]).resolve()
    assert code != ROOT and ROOT in code.parents, "CodeUri must not be the repository root (.venv, tests)"
    makefile = (code / "Makefile").read_text()
    assert "build-LoaderFunction:" in makefile
    assert "lambda_src loader" in makefile


def test_the_lambda_requirements_pin_every_runtime_dependency_as_constraints_does() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [*pyproject["dependencies"], *pyproject["optional-dependencies"]["lambda"]]
    lambda_pins = _pins(ROOT / "infra" / "lambda" / "requirements.txt")
    constraints = _pins(ROOT / "constraints.txt")
    missing = [d for d in runtime if _norm(Requirement(d).name) not in lambda_pins]
    assert not missing, f"runtime dependencies missing from infra/lambda/requirements.txt: {missing}"
    for name, version in lambda_pins.items():
        assert constraints.get(name) == version, (
            f"{name}=={version}; constraints.txt: {constraints.get(name)}"
        )
    for dep in runtime:
        req = Requirement(dep)
        assert req.specifier.contains(lambda_pins[_norm(req.name)]), f"{dep} vs the pin"
    # what the code imports at runtime beyond the declared names is pinned too
    for transitive in ("botocore", "s3transfer", "aiofiles", "multidict", "typing-extensions"):
        assert transitive in lambda_pins

"""What `sam build` ships (scripts/check_deploy.sh builds it and exports its directory): wheels for
the function's architecture and Python, the handler and every module of lambda_src and loader, and
nothing else of the repository. And infra/lambda/Makefile refuses to build without the code.

The build directories come from check_deploy.sh (run by scripts/test.sh); without them these tests
skip, except under CI=true, where a missing build is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "infra" / "lambda" / "Makefile"
_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}


def _missing(what: str) -> None:
    message = f"{what} (scripts/check_deploy.sh sets it; scripts/test.sh runs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _build_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        _missing(f"{var} is not set")
    path = Path(str(value))
    if not path.is_dir():
        _missing(f"{var}={value} is not a directory")
    return path


@pytest.fixture(scope="module")
def sam_build() -> Path:
    return _build_dir("S3DDB_SAM_BUILD_DIR")


@pytest.fixture(scope="module")
def x86_build() -> Path:
    return _build_dir("S3DDB_X86_BUILD_DIR")


def _runtime() -> tuple[str, str]:
    """(CPython tag, machine) of the template's function: ("cp313", "aarch64")."""
    text = (ROOT / "infra" / "template.yaml").read_text()
    runtime = re.search(r"^\s+Runtime: python(\d+)\.(\d+)\s*$", text, re.M)
    arch = re.search(r"^\s+Architectures: \[(\w+)\]\s*$", text, re.M)
    assert runtime and arch, "the template's Runtime / Architectures"
    return f"cp{runtime.group(1)}{runtime.group(2)}", _MACHINE[arch.group(1)]


def _wheel_tags(artifact: Path) -> dict[str, list[str]]:
    """dist-info name -> its WHEEL file's Tag lines (py3-none-any, cp313-cp313-manylinux_2_17_aarch64...)."""
    tags: dict[str, list[str]] = {}
    for wheel in sorted(artifact.glob("*.dist-info/WHEEL")):
        tags[wheel.parent.name] = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text().splitlines()
            if line.startswith("Tag:")
        ]
    assert tags, f"no *.dist-info/WHEEL in {artifact}: nothing was installed"
    return tags


def _check_tags(artifact: Path, cpython: str, machine: str) -> list[str]:
    """Every tag of every wheel that would not load on ``cpython`` on ``machine``."""
    wrong: list[str] = []
    for dist, tags in _wheel_tags(artifact).items():
        assert tags, f"{dist}: WHEEL has no Tag"
        for tag in tags:
            for expanded in _expand(tag):
                python, abi, platform = expanded.split("-")
                if platform == "any":
                    ok = abi == "none"
                elif abi == "abi3":
                    ok = (
                        platform.endswith(f"_{machine}")
                        and python.startswith("cp3")
                        and (int(python[3:]) <= int(cpython[3:]))
                    )
                else:
                    ok = platform.endswith(f"_{machine}") and python == cpython and abi == cpython
                if not ok:
                    wrong.append(f"{dist}: {expanded}")
    return wrong


def _expand(tag: str) -> list[str]:
    """A compressed tag set (py2.py3-none-any) as single tags."""
    python, abi, platform = tag.split("-")
    return [f"{p}-{a}-{pl}" for p in python.split(".") for a in abi.split(".") for pl in platform.split(".")]


def _repo_modules() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for package in ("lambda_src", "loader")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_every_compiled_wheel_is_for_the_functions_architecture_and_python(sam_build: Path) -> None:
    cpython, machine = _runtime()
    assert _check_tags(sam_build, cpython, machine) == []
    compiled = [d for d, tags in _wheel_tags(sam_build).items() if not all(t.endswith("-any") for t in tags)]
    assert compiled, "no compiled wheel at all (orjson, zstandard, uvloop are)"
    # and no shared object of another machine slipped in without a WHEEL tag saying so
    for so in sam_build.rglob("*.so"):
        assert machine in so.name or "abi3" in so.name or not re.search(r"x86_64|aarch64", so.name), so


def test_the_x86_64_build_is_for_x86_64(x86_build: Path) -> None:
    tags = [t for ts in _wheel_tags(x86_build).values() for t in ts if not t.endswith("-any")]
    assert tags and all(t.endswith("x86_64") for t in tags), tags
    pythons = {t.split("-")[0] for t in tags if "abi3" not in t}
    assert len(pythons) == 1, f"wheels for more than one Python: {pythons}"
    assert _check_tags(x86_build, pythons.pop(), "x86_64") == []


def test_the_artifact_holds_the_handler_and_every_module(sam_build: Path) -> None:
    assert (sam_build / "lambda_src" / "handler.py").is_file()
    shipped = {
        str(p.relative_to(sam_build))
        for package in ("lambda_src", "loader")
        for p in (sam_build / package).rglob("*.py")
    }
    assert shipped == _repo_modules()


def test_nothing_else_of_the_repository_ships(sam_build: Path) -> None:
    top = {p.name for p in sam_build.iterdir()}
    repo = {p.name for p in ROOT.iterdir()} | {".venv", "tests", "benchmarks", "s3ddb", "infra", "scripts"}
    assert top & repo == {"lambda_src", "loader"}
    for package in ("lambda_src", "loader"):
        extra = [
            p
            for p in (sam_build / package).rglob("*")
            if p.is_file() and p.suffix != ".py" and p.name != "py.typed"
        ]
        assert extra == [], extra
    # the built template points at this artifact, with the runtime the wheels are for
    built = yaml.load((sam_build.parent / "template.yaml").read_text(), Loader=_Loader)
    props = built["Resources"]["LoaderFunction"]["Properties"]
    cpython, machine = _runtime()
    assert props["CodeUri"] == sam_build.name
    assert props["Runtime"] == f"python{cpython[2]}.{cpython[3:]}"
    assert [_MACHINE[a] for a in props["Architectures"]] == [machine]


class _Loader(yaml.SafeLoader):
    """Keeps short tags (!Ref ...) of the built template as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


# -- the Makefile refuses to ship a function without its code ----------------------------------


def _make() -> str:
    make = shutil.which("make")
    if make is None:
        _missing("no `make` on PATH (sam build needs it too)")
    return str(make)


def test_the_makefile_refuses_to_build_where_the_code_is_not(tmp_path: Path) -> None:
    """`sam build --use-container` mounts only infra/lambda: the Makefile there used to print
    "find: 'lambda_src': No such file or directory", exit 0 and ship empty packages."""
    lonely = tmp_path / "infra" / "lambda"
    lonely.mkdir(parents=True)
    shutil.copy(MAKEFILE, lonely / "Makefile")
    out = tmp_path / "artifact"
    proc = subprocess.run(
        [_make(), "--no-print-directory", "build-LoaderFunction", f"ARTIFACTS_DIR={out}"],
        cwd=lonely,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "lambda_src/handler.py" in proc.stderr and "--use-container" in proc.stderr
    assert "sam build" in proc.stderr and "infra/template.yaml" in proc.stderr
    assert not out.exists(), "nothing is built"


def test_the_makefile_refuses_an_architecture_lambda_does_not_have(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            _make(),
            "-f",
            str(MAKEFILE),
            "build-LoaderFunction",
            f"ARTIFACTS_DIR={tmp_path / 'a'}",
            "LAMBDA_ARCH=ppc64le",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "LAMBDA_ARCH must be arm64 or x86_64" in proc.stderr
    assert not (tmp_path / "a").exists()

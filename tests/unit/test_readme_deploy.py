"""The README's deployment section names every parameter and output the template has, so a
parameter cannot be added (or renamed) without the user being told what it does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.unit.test_template import TEMPLATE, _CfnLoader

ROOT = Path(__file__).resolve().parents[2]


def _deploy_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploy to AWS")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_every_template_parameter_is_in_the_readme_parameter_table() -> None:
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    section = _deploy_section()
    table = section[section.index("| parameter | meaning | default |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    assert documented == set(template["Parameters"]), "README's parameter table differs from the template"


def test_the_commands_the_readme_gives_exist() -> None:
    section = _deploy_section()
    for command in ("s3ddb invoke", "s3ddb status", "s3ddb replay", "sam build", "sam deploy", "sam delete"):
        assert command in section
    from s3ddb.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("invoke", "status", "replay"):
        assert "--stack" in sub[name].format_help()

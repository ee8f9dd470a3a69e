"""The SAM template and what `sam build` ships: the function's guards, a code location whose pinned
requirements cover every runtime dependency, and what a first `sam deploy` needs: a trigger for an
existing bucket or a new one, every format the loader reads, several target tables, a deploy that
works on a small account, IAM limited to what the code calls, retained data and alarms that notify.

Intrinsic functions are evaluated here (``_Stack``) for concrete parameter values, so a test
checks what CloudFormation would create, not how the YAML happens to be spelt. `sam validate --lint`
(scripts/check_deploy.sh) checks the syntax.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
MAKEFILE = ROOT / "infra" / "lambda" / "Makefile"


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


def _template() -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return template


def _function() -> dict[str, Any]:
    fn: dict[str, Any] = _template()["Resources"]["LoaderFunction"]
    return fn


# -- a small evaluator of the intrinsic functions the template uses -----------------------------

_NO_VALUE = object()
_PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "s3ddb",
}


class _Stack:
    """The template under concrete parameter values: conditions, and resources with intrinsics
    resolved (a resource's Ref is ``<Name>``, a GetAtt ``<Name.Attr>``; a condition-false
    ``!If`` branch and ``AWS::NoValue`` disappear, as CloudFormation drops them)."""

    def __init__(self, **params: str) -> None:
        self.template = _template()
        declared = self.template["Parameters"]
        unknown = set(params) - set(declared)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.params: dict[str, Any] = dict(_PSEUDO)
        for name, decl in declared.items():
            raw = params.get(name, decl.get("Default"))
            assert raw is not None, f"parameter {name} has no default: give it"
            raw = str(raw)
            self.params[name] = (
                [p.strip() for p in raw.split(",")] if decl["Type"] == "CommaDelimitedList" else raw
            )
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            value = self.resolve(self.template["Conditions"][name])
            assert isinstance(value, bool), f"condition {name} is not a boolean: {value!r}"
            self._conditions[name] = value
        return self._conditions[name]

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources CloudFormation would create, resolved."""
        out: dict[str, dict[str, Any]] = {}
        for name, res in self.template["Resources"].items():
            if "Condition" in res and not self.condition(res["Condition"]):
                continue
            out[name] = self.resolve(res)
        return out

    def resource(self, name: str) -> dict[str, Any]:
        return self.resources()[name]

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if name in self.params:
                value = self.params[name]
                assert isinstance(value, str), f"${{{name}}} in a Sub is a list"
                return value
            return f"<{name}>"  # a resource (its Ref) or Resource.Attr (its GetAtt)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return _NO_VALUE
                return self.params.get(arg, f"<{arg}>")
            if fn == "GetAtt":
                return f"<{arg if isinstance(arg, str) else '.'.join(arg)}>"
            if fn == "Sub":
                if isinstance(arg, str):
                    return self._sub(arg, {})
                text, variables = arg
                return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if fn == "Join":
                delimiter, items = arg
                assert isinstance(delimiter, str), "Fn::Join's delimiter must be a literal string"
                values = self.resolve(items)
                return delimiter.join(values)
            if fn == "Split":
                delimiter, text = arg
                return str(self.resolve(text)).split(delimiter)
            if fn == "Select":
                index, items = arg
                values = self.resolve(items)
                assert int(index) < len(values), f"Fn::Select {index} out of range of {values}"
                return values[int(index)]
            if fn == "If":
                name, yes, no = arg
                return self.resolve(yes if self.condition(name) else no)
            if fn == "Equals":
                a, b = (self.resolve(x) for x in arg)
                return bool(a == b)
            if fn == "Not":
                return not self.resolve(arg[0])
            if fn == "And":
                return all(self.resolve(x) for x in arg)
            if fn == "Or":
                return any(self.resolve(x) for x in arg)
            if fn == "Condition":
                return self.condition(arg)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not _NO_VALUE}

    # the parts tests look at most

    def statements(self) -> list[dict[str, Any]]:
        role = self.resource("LoaderRole")
        (policy,) = role["Properties"]["Policies"]
        statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
        return statements

    def statement(self, sid: str) -> dict[str, Any]:
        (st,) = [s for s in self.statements() if s.get("Sid") == sid]
        return st

    def env(self) -> dict[str, Any]:
        env: dict[str, Any] = self.resource("LoaderFunction")["Properties"]["Environment"]["Variables"]
        return env


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


REQUIRED = {"SourceBucketName": "data-bucket", "TargetTableNames": "Orders"}


# -- the function ---------------------------------------------------------------------------------


def test_the_function_allows_its_own_recursion_and_is_bounded() -> None:
    props = _Stack(**REQUIRED, ReservedConcurrency="10").resource("LoaderFunction")["Properties"]
    assert props["RecursiveLoop"] == "Allow"
    assert props["ReservedConcurrentExecutions"] == "10"
    assert props["Timeout"] == 900
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    invoke = _Stack(**REQUIRED).statement("ContinueItself")
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert sorted(invoke["Resource"]) == [
        "arn:aws:lambda:us-east-1:123456789012:function:s3ddb-loader",
        "arn:aws:lambda:us-east-1:123456789012:function:s3ddb-loader:*",
    ]
    assert _Stack(**REQUIRED).resource("LoaderFunction")["Properties"]["FunctionName"] == "s3ddb-loader"


def test_no_concurrency_is_reserved_by_default_so_a_small_account_can_deploy() -> None:
    """Reserving N needs an account quota of N + 100; new accounts may have 10 and the deploy
    failed "below its minimum value" and rolled back."""
    param = _template()["Parameters"]["ReservedConcurrency"]
    assert param["Default"] == 0 and param["MinValue"] == 0
    assert "100" in param["Description"] and "quota" in param["Description"]
    props = _Stack(**REQUIRED).resource("LoaderFunction")["Properties"]
    assert "ReservedConcurrentExecutions" not in props


def test_the_code_location_ships_only_the_packages_and_pinned_runtime_deps() -> None:
    fn = _function()
    assert fn["Metadata"]["BuildMethod"] == "makefile"
    code = (TEMPLATE.parent / fn["Properties"]["CodeUri"]).resolve()
    assert code != ROOT and ROOT in code.parents, "CodeUri must not be the repository root (.venv, tests)"
    makefile = (code / "Makefile").read_text()
    assert "build-LoaderFunction:" in makefile
    assert re.search(r"^PACKAGES := lambda_src loader$", makefile, re.M)


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


def test_the_sam_cli_is_pinned_with_the_linter_constraints_pins() -> None:
    sam = _pins(ROOT / "infra" / "sam-requirements.txt")
    assert "aws-sam-cli" in sam
    assert sam["cfn-lint"] == _pins(ROOT / "constraints.txt")["cfn-lint"]


# -- runtime and architecture: written once, and the build follows them ------------------------


def _make_default(name: str) -> str:
    m = re.search(rf"^{name} \?= (\S+)$", MAKEFILE.read_text(), re.M)
    assert m, f"infra/lambda/Makefile has no '{name} ?= ...'"
    return m.group(1)


def test_runtime_and_architecture_are_written_once_and_the_makefile_builds_for_them() -> None:
    text = TEMPLATE.read_text()
    assert len(re.findall(r"^\s+Runtime:", text, re.M)) == 1, "Runtime must be in the template once"
    assert len(re.findall(r"^\s+Architectures:", text, re.M)) == 1
    props = _function()["Properties"]
    runtime, (arch,) = props["Runtime"], props["Architectures"]
    assert runtime == f"python{_make_default('LAMBDA_PYTHON')}"
    assert arch == _make_default("LAMBDA_ARCH")
    # python3.11 is deprecated on Lambda in 2027; 3.12+ runs on Amazon Linux 2023
    assert tuple(int(p) for p in runtime.removeprefix("python").split(".")) >= (3, 13)
    makefile = MAKEFILE.read_text()
    assert "--python-version $(LAMBDA_PYTHON)" in makefile
    assert not re.search(r"--python-version \d", makefile), "a Python version written twice"
    assert not re.search(r"--platform manylinux", makefile), "a platform written twice"
    branch = re.search(rf"ifeq \(\$\(LAMBDA_ARCH\),{arch}\)\nPLATFORMS := (.+)\n", makefile)
    assert branch, f"the Makefile has no PLATFORMS for {arch}"
    machine = {"arm64": "aarch64", "x86_64": "x86_64"}[arch]
    assert all(p.endswith(f"_{machine}") for p in branch.group(1).split())


def test_the_makefile_fails_on_any_error() -> None:
    makefile = MAKEFILE.read_text()
    assert re.search(r"^SHELL := /bin/bash$", makefile, re.M)
    assert re.search(r"^\.SHELLFLAGS := -euo pipefail -c$", makefile, re.M)


# -- parameters -------------------------------------------------------------------------------


def test_numeric_parameters_say_what_they_do_and_accept_what_the_function_accepts() -> None:
    from lambda_src.settings import BOUNDS, Settings
    from loader.errors import ConfigError

    params = _template()["Parameters"]
    env = _function()["Properties"]["Environment"]["Variables"]
    for name, decl in params.items():
        if decl["Type"] != "Number":
            continue
        assert decl.get("Description"), f"{name} has no Description"
        assert "MinValue" in decl and "MaxValue" in decl, f"{name} has no MinValue/MaxValue"
        assert decl["MinValue"] <= decl["Default"] <= decl["MaxValue"], name
    fed = {var: value["Ref"] for var, value in env.items() if isinstance(value, dict) and "Ref" in value}
    bounded = {var: param for var, param in fed.items() if params.get(param, {}).get("Type") == "Number"}
    assert set(bounded) <= set(BOUNDS), f"numeric variables without a bound in settings.BOUNDS: {bounded}"
    assert bounded, "no numeric parameter feeds the function"
    for var, param in bounded.items():
        decl = params[param]
        assert (decl["MinValue"], decl["MaxValue"]) == BOUNDS[var], f"{param} -> {var}"
    for var, value in env.items():  # a literal the template sets must be one the function takes
        if var in BOUNDS and not isinstance(value, dict):
            low, high = BOUNDS[var]
            assert low <= int(value) <= high, f"{var}={value}"
    # and the table is what Settings really checks
    for var, (low, high) in BOUNDS.items():
        base = {"S3DDB_LEDGER_TABLE": "ledger"}
        Settings.from_env({**base, var: str(low)})
        Settings.from_env({**base, var: str(high)})
        for bad in (low - 1, high + 1):
            with pytest.raises(ConfigError, match=var):
                Settings.from_env({**base, var: str(bad)})
    assert (params["MemorySize"]["MinValue"], params["MemorySize"]["MaxValue"]) == (128, 10240)


def test_log_retention_is_one_cloudwatch_accepts() -> None:
    decl = _template()["Parameters"]["LogRetentionDays"]
    assert decl["Default"] == 30
    assert decl["AllowedValues"] == [
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    ]


def test_the_source_prefix_is_matched_the_same_in_the_event_and_in_iam() -> None:
    """The rule's wildcard sees the key as the event carries it, URL-encoded (``quote_plus``, as
    the handler decodes it), IAM and the function see it decoded: a prefix is allowed only when
    encoding leaves it as it is, and it holds no EventBridge wildcard character."""
    from urllib.parse import quote_plus

    decl = _template()["Parameters"]["SourcePrefix"]
    assert decl["Default"] == ""
    pattern = re.compile(decl["AllowedPattern"])
    for ok in ("", "incoming/", "exports/2026-12_v1.0/"):
        assert pattern.fullmatch(ok), ok
        assert quote_plus(ok, safe="/") == ok
    for bad in ("in*/", "*", "a\\b", "\\*", "a b/", "c+d/", "x=1/", "ü/", "a%2F/"):
        assert not pattern.fullmatch(bad), bad


# -- the trigger: one mechanism for a new bucket and an existing one ------------------------------


def _loader_suffixes() -> set[str]:
    from loader import source

    lower = {".csv"} | {".csv" + ext for ext in source._EXTENSIONS}
    return lower | {s.upper() for s in lower}


def _wildcard(pattern: str) -> re.Pattern[str]:
    """EventBridge's wildcard filter: '*' is any run of characters, the rest is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.S)


def test_new_objects_of_every_format_the_loader_reads_start_a_load() -> None:
    for prefix in ("", "incoming/"):
        stack = _Stack(**REQUIRED, SourcePrefix=prefix)
        rule = stack.resource("ObjectCreatedRule")["Properties"]
        pattern = rule["EventPattern"]
        assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
        assert pattern["detail"]["bucket"]["name"] == ["data-bucket"]
        wildcards = [f["wildcard"] for f in pattern["detail"]["object"]["key"]]
        assert {w.removeprefix(prefix + "*") for w in wildcards} == _loader_suffixes()
        assert all(w.startswith(prefix + "*") for w in wildcards)
        matchers = [_wildcard(w) for w in wildcards]

        def fires(key: str, matchers: list[re.Pattern[str]] = matchers) -> bool:
            return any(m.fullmatch(key) for m in matchers)

        for suffix in _loader_suffixes():
            assert fires(f"{prefix}2026/07/orders{suffix}"), suffix
        assert fires(f"{prefix}EXPORT.CSV") and fires(f"{prefix}EXPORT.CSV.GZ")
        assert not fires(f"{prefix}orders.csv.tmp") and not fires(f"{prefix}orders.json")
        if prefix:
            assert not fires("elsewhere/orders.csv")
        (target,) = rule["Targets"]
        assert target["Arn"] == "<LoaderFunction.Arn>"


def test_only_eventbridge_invokes_the_function_from_its_rule_in_this_account() -> None:
    stack = _Stack(**REQUIRED)
    assert "Events" not in stack.resource("LoaderFunction")["Properties"], "one trigger mechanism"
    perm = stack.resource("ObjectCreatedPermission")
    assert perm["Type"] == "AWS::Lambda::Permission"
    props = perm["Properties"]
    assert props["Principal"] == "events.amazonaws.com"
    assert props["Action"] == "lambda:InvokeFunction"
    assert props["FunctionName"] == "<LoaderFunction.Arn>"
    assert props["SourceArn"] == "<ObjectCreatedRule.Arn>"
    assert props["SourceAccount"] == "123456789012"


def test_what_the_rule_delivers_is_an_event_the_handler_accepts() -> None:
    from lambda_src.events import ObjectsEvent, parse_event

    # the shape S3 sends to EventBridge (S3 user guide, "EventBridge event message structure")
    event = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": ["arn:aws:s3:::data-bucket"],
        "detail": {
            "version": "0",
            "bucket": {"name": "data-bucket"},
            "object": {
                "key": "incoming/orders.csv.gz",
                "size": 5,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
    parsed = parse_event(event)
    assert isinstance(parsed, ObjectsEvent) and parsed.origin == "eventbridge"
    (ref,) = parsed.objects
    assert (ref.bucket, ref.key, ref.version_id, ref.size) == (
        "data-bucket",
        "incoming/orders.csv.gz",
        "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        5,
    )


def test_a_new_bucket_is_created_with_eventbridge_on_and_an_existing_one_is_left_alone() -> None:
    decl = _template()["Parameters"]["CreateSourceBucket"]
    assert decl["AllowedValues"] == ["true", "false"]
    assert "put-bucket-notification-configuration" in decl["Description"]
    assert "get-bucket-notification-configuration" in decl["Description"]
    created = _Stack(**REQUIRED, CreateSourceBucket="true").resources()
    bucket = created["SourceBucket"]["Properties"]
    assert bucket["BucketName"] == "data-bucket"
    assert bucket["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    existing = _Stack(**REQUIRED, CreateSourceBucket="false")
    assert "SourceBucket" not in existing.resources()
    # the same trigger, the same reads and the same outputs either way
    for stack in (_Stack(**REQUIRED, CreateSourceBucket="true"), existing):
        rule = stack.resource("ObjectCreatedRule")["Properties"]
        assert rule["EventPattern"]["detail"]["bucket"]["name"] == ["data-bucket"]
        assert stack.statement("ReadSource")["Resource"] == "arn:aws:s3:::data-bucket/*"
        assert stack.resolve(stack.template["Outputs"]["SourceBucket"]["Value"]) == "data-bucket"
        assert stack.env()["S3DDB_ALLOWED_BUCKETS"] == "data-bucket"


# -- target tables: IAM and the allow-list from one parameter ---------------------------------------


def test_every_target_table_is_granted_and_allowed_and_the_first_takes_notified_objects() -> None:
    template = _template()
    env = template["Resources"]["LoaderFunction"]["Properties"]["Environment"]["Variables"]
    assert env["S3DDB_ALLOWED_TABLES"] == {"Join": [",", {"Ref": "TargetTableNames"}]}
    names = ["Orders", "orders-v2", "Orders_2026.archive", "aaa", "bbb", "ccc", "ddd", "eee"]
    for n in range(1, len(names) + 1):
        tables = names[:n]
        stack = _Stack(**{**REQUIRED, "TargetTableNames": ",".join(tables)})
        st = stack.statement("WriteTargets")
        assert sorted(st["Action"]) == ["dynamodb:BatchWriteItem", "dynamodb:DescribeTable"]
        granted = [
            arn.removeprefix("arn:aws:dynamodb:us-east-1:123456789012:table/") for arn in st["Resource"]
        ]
        assert granted == tables, "IAM must grant exactly the tables of TargetTableNames"
        assert stack.env()["S3DDB_ALLOWED_TABLES"].split(",") == tables
        assert stack.env()["S3DDB_TABLE"] == tables[0]
        assert "TargetTableNamesHoldsMoreThan8Tables" not in stack.resources()
    # a ninth table would be allowed without a grant: the deploy is refused instead
    nine = _Stack(**{**REQUIRED, "TargetTableNames": ",".join([*names, "fff"])})
    guard = nine.resource("TargetTableNamesHoldsMoreThan8Tables")
    assert guard["Type"] == "AWS::CloudFormation::WaitCondition"
    assert "8" in template["Parameters"]["TargetTableNames"]["Description"]


# -- IAM: only what the code calls, each once -----------------------------------------------------

#: the function's code paths: everything it imports (the CLI's admin helpers run with the operator's
#: credentials, never in the function)
_FUNCTION_CODE = [p for p in sorted((ROOT / "lambda_src").glob("*.py")) if p.name != "admin.py"] + sorted(
    (ROOT / "loader").glob("*.py")
)

#: each granted action -> a call in the function's code that needs it
_CALLS = {
    "s3:GetObject": r"\.get_object\(|smart_open\.s3\.open\(",
    "s3:GetObjectVersion": r"\[\"VersionId\"\] = ",
    "s3:ListBucket": r"\.list_objects_v2\(|\.head_bucket\(",
    "s3:PutObject": r"\.put_object\(",
    "dynamodb:BatchWriteItem": r"\.batch_write_item\(|DynamoDB_20120810\.BatchWriteItem",
    "dynamodb:DescribeTable": r"\.describe_table\(",
    "dynamodb:GetItem": r"\.get_item\(",
    "dynamodb:PutItem": r"\.put_item\b",
    "dynamodb:UpdateItem": r"\.update_item\b",
    "lambda:InvokeFunction": r"lambda_client\.invoke\(",
}
#: actions Lambda or S3 perform with the function's role, and what in the template makes them
_SERVICE_ACTIONS = {
    "logs:CreateLogStream": "the function's log group (LoggingConfig)",
    "logs:PutLogEvents": "the function's log group (LoggingConfig)",
    "sqs:SendMessage": "the on-failure destination (EventInvokeConfig)",
    "kms:Decrypt": "S3 reading SSE-KMS objects (KmsKeyArn)",
    "kms:GenerateDataKey": "S3 writing rejects to a bucket encrypted with KmsKeyArn",
}


def _code() -> str:
    return "\n".join(p.read_text() for p in _FUNCTION_CODE)


def _full_stack() -> _Stack:
    """Every optional statement present."""
    return _Stack(
        **REQUIRED,
        SourcePrefix="incoming/",
        SchemaJson="s3://config-bucket/schemas/orders.json",
        KmsKeyArn="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )


def test_every_granted_action_is_one_the_functions_code_or_its_services_use() -> None:
    code = _code()
    for stack in (_Stack(**REQUIRED), _full_stack()):
        actions = {a for st in stack.statements() for a in _as_list(st["Action"])}
        for action in actions:
            if action in _SERVICE_ACTIONS:
                continue
            assert action in _CALLS, f"{action} is granted but no call of the function's code is listed"
            assert re.search(_CALLS[action], code), f"{action}: no {_CALLS[action]} in the function's code"
        assert all(
            st["Effect"] == "Allow" and "*" not in _as_list(st["Resource"]) for st in stack.statements()
        )
    assert set(_CALLS) | set(_SERVICE_ACTIONS) == {
        a for st in _full_stack().statements() for a in _as_list(st["Action"])
    }, "a call the code makes has no grant"
    props = _Stack(**REQUIRED).resource("LoaderFunction")["Properties"]
    assert props["Role"] == "<LoaderRole.Arn>"
    assert "Policies" not in props, "an explicit role: SAM adds no managed logs:* policy"
    role = _Stack(**REQUIRED).resource("LoaderRole")["Properties"]
    assert "ManagedPolicyArns" not in role


def test_the_function_never_queries_the_ledger() -> None:
    """dynamodb:Query is not granted: only Ledger.chains queries, and only the CLI (s3ddb status,
    with the operator's credentials) calls it."""
    queries = set()
    for path in _FUNCTION_CODE:
        text = path.read_text()
        for m in re.finditer(r"\.query\(", text):
            defs = re.findall(r"^\s*def (\w+)", text[: m.start()], re.M)
            queries.add((path.name, defs[-1] if defs else "<module>"))
    assert queries == {("ledger.py", "chains")}, queries
    callers = [m for p in _FUNCTION_CODE for m in re.findall(r"\.chains\(", p.read_text())]
    assert callers == [], "the function calls Ledger.chains (a Query): grant dynamodb:Query"
    assert "dynamodb:Query" not in {a for st in _full_stack().statements() for a in _as_list(st["Action"])}


def test_no_action_is_granted_twice_on_the_same_resource() -> None:
    for stack in (_Stack(**REQUIRED), _full_stack()):
        pairs = [
            (action, resource)
            for st in stack.statements()
            for action in _as_list(st["Action"])
            for resource in _as_list(st["Resource"])
        ]
        assert len(pairs) == len(set(pairs)), sorted(p for p in pairs if pairs.count(p) > 1)


def test_logs_go_to_the_stacks_log_group_only() -> None:
    stack = _Stack(**REQUIRED, LogRetentionDays="90")
    group = stack.resource("LoaderLogGroup")["Properties"]
    fn = stack.resource("LoaderFunction")["Properties"]
    assert group["LogGroupName"] == f"/aws/lambda/{fn['FunctionName']}"
    assert group["RetentionInDays"] == "90"
    assert fn["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "<LoaderLogGroup>"}
    st = stack.statement("WriteLogs")
    assert sorted(st["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert st["Resource"] == "<LoaderLogGroup.Arn>"


def test_reads_are_scoped_to_the_source_prefix() -> None:
    plain = _Stack(**REQUIRED)
    assert plain.statement("ReadSource")["Resource"] == "arn:aws:s3:::data-bucket/*"
    assert "Condition" not in plain.statement("ListSource")
    scoped = _Stack(**REQUIRED, SourcePrefix="incoming/")
    assert scoped.statement("ReadSource")["Resource"] == "arn:aws:s3:::data-bucket/incoming/*"
    listing = scoped.statement("ListSource")
    assert listing["Resource"] == "arn:aws:s3:::data-bucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "incoming/*"}}
    # the function refuses what IAM would deny, at the door, with the reason (not AccessDenied later)
    assert scoped.env()["S3DDB_ALLOWED_PREFIX"] == "incoming/" and plain.env()["S3DDB_ALLOWED_PREFIX"] == ""


@pytest.mark.parametrize(
    ("schema", "resource"),
    [
        ("", None),
        ('{"columns": {"amount": "N"}}', None),
        ('{"columns": {"uri": "s3://not/a/schema"}}', None),
        ("s3://config-bucket/schemas/orders.json", "arn:aws:s3:::config-bucket/schemas/orders.json"),
        ("s3://data-bucket/schema.json", "arn:aws:s3:::data-bucket/schema.json"),
    ],
)
def test_an_s3_schema_anywhere_is_readable_and_nothing_else_is_granted_for_it(
    schema: str, resource: str | None
) -> None:
    stack = _Stack(**REQUIRED, SchemaJson=schema)
    found = [s for s in stack.statements() if s.get("Sid") == "ReadSchema"]
    if resource is None:
        assert found == []
    else:
        (st,) = found
        assert (st["Action"], st["Resource"]) == ("s3:GetObject", resource)


def test_a_kms_key_is_granted_decrypt_and_generate_data_key_only_and_encrypts_the_stacks_buckets() -> None:
    assert [s for s in _Stack(**REQUIRED).statements() if s.get("Sid") == "UseKmsKey"] == []
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    stack = _Stack(**REQUIRED, KmsKeyArn=key)
    st = stack.statement("UseKmsKey")
    assert sorted(st["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"] and st["Resource"] == key
    for name in ("RejectsBucket", "SourceBucket"):
        (rule,) = stack.resource(name)["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    description = _template()["Parameters"]["KmsKeyArn"]["Description"]
    assert "kms:Decrypt" in description and "kms:GenerateDataKey" in description
    assert re.fullmatch(_template()["Parameters"]["KmsKeyArn"]["AllowedPattern"], key)


def test_the_failure_queue_is_granted_once_and_the_ledger_only_what_chains_do() -> None:
    stack = _Stack(**REQUIRED)
    sends = [s for s in stack.statements() if "sqs:SendMessage" in _as_list(s["Action"])]
    assert len(sends) == 1 and sends[0]["Resource"] == "<FailedInvocations.Arn>"
    ledger = stack.statement("Ledger")
    assert sorted(ledger["Action"]) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert ledger["Resource"] == "<Ledger.Arn>"


# -- data is retained, the stack deletes --------------------------------------------------------


def test_user_data_survives_stack_deletion_and_replacement() -> None:
    resources = _template()["Resources"]
    for name in ("Ledger", "SourceBucket", "RejectsBucket"):
        assert resources[name].get("DeletionPolicy") == "Retain", name
        assert resources[name].get("UpdateReplacePolicy") == "Retain", name


# -- alarms ------------------------------------------------------------------------------------


def test_every_alarm_notifies_a_topic_when_it_fires_and_when_it_clears() -> None:
    own = _Stack(**REQUIRED)
    assert own.resource("AlarmTopic")["Type"] == "AWS::SNS::Topic"
    given = "arn:aws:sns:us-east-1:123456789012:ops"
    theirs = _Stack(**REQUIRED, AlarmTopicArn=given)
    assert "AlarmTopic" not in theirs.resources()
    for stack, topic in ((own, "<AlarmTopic>"), (theirs, given)):
        alarms = {n: r for n, r in stack.resources().items() if r["Type"] == "AWS::CloudWatch::Alarm"}
        assert len(alarms) >= 9
        for name, alarm in alarms.items():
            assert alarm["Properties"]["AlarmActions"] == [topic], name
            assert alarm["Properties"]["OKActions"] == [topic], name
        assert stack.resolve(stack.template["Outputs"]["AlarmTopicArn"]["Value"]) == topic
        assert "AlarmEmailSubscription" not in stack.resources()
    mailed = _Stack(**REQUIRED, AlarmEmail="ops@example.com").resource("AlarmEmailSubscription")
    assert mailed["Properties"] == {
        "Protocol": "email",
        "Endpoint": "ops@example.com",
        "TopicArn": "<AlarmTopic>",
    }


def _alarm(namespace: str, metric: str) -> dict[str, Any]:
    stack = _Stack(**REQUIRED)
    (alarm,) = [
        r["Properties"]
        for r in stack.resources().values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and (r["Properties"]["Namespace"], r["Properties"]["MetricName"]) == (namespace, metric)
    ]
    return alarm


def test_function_throttles_and_old_queued_events_are_watched() -> None:
    throttles = _alarm("AWS/Lambda", "Throttles")
    assert throttles["Dimensions"] == [{"Name": "FunctionName", "Value": "<LoaderFunction>"}]
    age = _alarm("AWS/Lambda", "AsyncEventAge")
    assert age["Statistic"] == "Maximum" and age["Threshold"] == 15 * 60 * 1000
    assert age["Dimensions"] == [{"Name": "FunctionName", "Value": "<LoaderFunction>"}]


def test_sustained_write_throttling_on_the_target_tables_is_watched_on_the_metric_hops_emit() -> None:
    from lambda_src.observability import NAMESPACE, SERVICE, WRITE_THROTTLES

    alarm = _alarm(NAMESPACE, WRITE_THROTTLES)
    env = _Stack(**REQUIRED).resource("LoaderFunction")["Properties"]["Environment"]["Variables"]
    # the dimension the function emits under (Telemetry takes POWERTOOLS_SERVICE_NAME) is the one
    # watched, and it is the stack's own: two stacks in one account do not trip each other's alarms
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    other = _Stack(**REQUIRED)
    other.params["AWS::StackName"] = "other"
    other_env = other.resource("LoaderFunction")["Properties"]["Environment"]["Variables"]
    assert other_env["POWERTOOLS_SERVICE_NAME"] == "other-loader" != env["POWERTOOLS_SERVICE_NAME"]
    for res in other.resources().values():
        if res["Type"] == "AWS::CloudWatch::Alarm" and res["Properties"]["Namespace"] == NAMESPACE:
            assert res["Properties"]["Dimensions"] == [{"Name": "service", "Value": "other-loader"}]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (300, 3, 3)
    assert alarm["Statistic"] == "Sum" and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert SERVICE == "s3ddb-loader"  # what a function without the variable (the local emulator) uses


def test_telemetry_emits_under_the_service_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from lambda_src.observability import SERVICE, Telemetry

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "orders-stack-loader")
    assert Telemetry().service == "orders-stack-loader"
    assert Telemetry(service="explicit").service == "explicit"
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME")
    assert Telemetry().service == SERVICE


def test_the_trigger_rule_failing_to_invoke_is_watched() -> None:
    alarm = _alarm("AWS/Events", "FailedInvocations")
    assert alarm["Dimensions"] == [{"Name": "RuleName", "Value": "<ObjectCreatedRule>"}]


# -- outputs -------------------------------------------------------------------------------------


def test_the_outputs_are_the_ones_the_cli_reads() -> None:
    assert set(_template()["Outputs"]) == {
        "FunctionName",
        "FunctionArn",
        "SourceBucket",
        "RejectsBucket",
        "LedgerTable",
        "FailureQueueUrl",
        "AlarmTopicArn",
        "LogGroup",
    }
    stack = _Stack(**REQUIRED)
    values = {k: stack.resolve(v["Value"]) for k, v in stack.template["Outputs"].items()}
    assert values["FunctionArn"] == "<LoaderFunction.Arn>" and values["LogGroup"] == "<LoaderLogGroup>"

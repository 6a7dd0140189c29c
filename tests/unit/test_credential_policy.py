"""Issue 8.4: what a tenant's credential document may ask of a node.

Secret names are allow-listed by pattern and deny-list, platform keys cannot be overridden, a
tenant's own R2 key pair replaces the platform's, and a workspace must be one TENANT_WORKSPACES
allows for the tenant. Each is refused when the document is read (``credentials_cli put``) and
again when a launch assembles the task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from controlplane.config import ConfigError, load_settings
from controlplane.credential_policy import (
    DENIED_NAMES,
    DENIED_PREFIXES,
    PLATFORM_NAMES,
    CredentialPolicyError,
    R2Keys,
    check_workspace,
)
from controlplane.credentials_cli import UsageError, read_document
from controlplane.skypilot.task import build_task
from controlplane.spec import NodeSpec
from controlplane.vault import CredentialPayload, Vault, VaultError
from tests.support.specs import node_spec, task_settings

PLATFORM_R2 = task_settings(
    r2_access_key_id=SecretStr("platform-r2-access-key-id"),
    r2_secret_access_key=SecretStr("platform-r2-secret-access-key"),
)
SMUGGLED = "https://evil.example.com/simple"
SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"

# Every name issue 8 lists, one per family, plus the platform's own keys.
DENIED = [
    "PATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "BASH_ENV",
    "BASH_FUNC_PIP%%",
    "ENV",
    "SKYPILOT_DEBUG",
    "HOME",
    "SHELL",
    "IFS",
    "PS4",
    "SHELLOPTS",
    "PROMPT_COMMAND",
    "NODE_OPTIONS",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYOPT",
    "RUBYLIB",
    "CUDA_VISIBLE_DEVICES",
    "NCCL_NET_PLUGIN",
    "GCONV_PATH",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "CONTROL_PLANE_URL",
    "MODEL_ID",
    "TENANT_ID",
    "VLLM_VERSION",
]
ALLOWED = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY", "AWS_REGION"]


def spec() -> NodeSpec:
    return node_spec()


@pytest.mark.parametrize("name", DENIED)
def test_denied_secret_names_are_refused_when_the_document_is_read(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"secrets": {"HF_TOKEN": "hf_x", name: SMUGGLED}}))

    with pytest.raises(UsageError) as caught:
        read_document(str(path))

    message = str(caught.value)
    assert message.startswith(f"invalid credential document in {path}: secrets")
    assert "denied" in message or "set by the platform" in message or "not environment" in message
    assert SMUGGLED not in message


@pytest.mark.parametrize("name", ALLOWED)
def test_ordinary_secret_names_are_accepted(name: str) -> None:
    payload = CredentialPayload.model_validate({"secrets": {name: "value-1234"}})
    assert list(payload.secrets) == [name]


def test_a_rejection_says_why_and_names_only_the_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        CredentialPayload.model_validate(
            {"secrets": {"PIP_INDEX_URL": "x", "PATH": "y", "R2_SECRET_ACCESS_KEY": "z"}}
        )
    message = str(caught.value)
    assert "names starting with PIP_ are denied" in message
    assert "PATH is denied" in message
    assert "R2_SECRET_ACCESS_KEY is set by the platform and cannot be overridden" in message


@pytest.mark.parametrize("name", ["PIP_INDEX_URL", "LD_PRELOAD", "BASH_ENV", "PYTHONPATH", "PATH"])
def test_the_launch_rechecks_names_an_old_document_may_still_hold(name: str) -> None:
    """build_task is handed the stored secrets as they are: it refuses them itself."""
    with pytest.raises(CredentialPolicyError, match="tenant 'acme' credential secrets"):
        build_task(spec(), PLATFORM_R2, node_secrets={name: SecretStr(SMUGGLED)})


@pytest.mark.parametrize("name", ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"])
def test_a_tenant_secret_never_overrides_the_platforms_r2_keys(name: str) -> None:
    with pytest.raises(CredentialPolicyError, match="set by the platform"):
        build_task(spec(), PLATFORM_R2, node_secrets={name: SecretStr("tenant-value")})


def test_a_tenants_own_r2_keys_replace_the_platforms() -> None:
    own = R2Keys(
        access_key_id=SecretStr("acme-r2-key-id"), secret_access_key=SecretStr("acme-r2-secret")
    )
    task = build_task(
        spec(), PLATFORM_R2, node_secrets={"HF_TOKEN": SecretStr("hf_x")}, tenant_r2=own
    )
    secrets = yaml.safe_load(task.render(with_secrets=True))["secrets"]
    assert secrets == {
        "HF_TOKEN": "hf_x",
        "R2_ACCESS_KEY_ID": "acme-r2-key-id",
        "R2_SECRET_ACCESS_KEY": "acme-r2-secret",
    }
    without = build_task(spec(), PLATFORM_R2)
    assert without.secret_values()["R2_SECRET_ACCESS_KEY"] == "platform-r2-secret-access-key"


def test_the_r2_field_is_sealed_and_opened_with_the_document() -> None:
    vault = Vault(b"k" * 32)
    document = {
        "secrets": {"HF_TOKEN": "hf_x"},
        "r2": {"access_key_id": "acme-key-id", "secret_access_key": "acme-secret"},
    }
    opened = vault.open("acme", "aws", vault.seal("acme", "aws", CredentialPayload(**document)))
    assert opened.r2 is not None
    assert opened.r2.secret_access_key.get_secret_value() == "acme-secret"
    assert "acme-secret" not in repr(opened)
    with pytest.raises(ValidationError, match="r2"):
        CredentialPayload.model_validate({"r2": {"access_key_id": "only-half"}})


def test_every_name_the_platform_sets_is_a_platform_name() -> None:
    """The deny-list of platform names cannot drift from what build_task sets."""
    task = build_task(spec(), PLATFORM_R2)
    assert set(task.envs) | set(task.secrets) <= PLATFORM_NAMES


def test_a_stored_document_with_a_denied_name_does_not_open() -> None:
    """A row sealed before the rule existed fails to open, naming the rule (not the value)."""
    vault = Vault(b"k" * 32)
    old = CredentialPayload.model_construct(
        workspace=None, secrets={"PIP_INDEX_URL": SecretStr(SMUGGLED)}, r2=None
    )
    sealed = vault.seal("acme", "aws", old)
    with pytest.raises(VaultError) as caught:
        vault.open("acme", "aws", sealed)
    assert "names starting with PIP_ are denied" in str(caught.value)
    assert SMUGGLED not in str(caught.value)


def test_a_workspace_must_be_allowed_for_the_tenant() -> None:
    allowed = {"acme": frozenset({"team-a", "team-b"}), "globex": frozenset({"gx"})}
    check_workspace("acme", "team-a", allowed)
    check_workspace("acme", None, allowed)
    with pytest.raises(CredentialPolicyError) as caught:
        check_workspace("acme", "gx", allowed)
    message = str(caught.value)
    assert "workspace 'gx' is not allowed for tenant 'acme'" in message
    assert "TENANT_WORKSPACES allows team-a, team-b" in message
    with pytest.raises(CredentialPolicyError, match="allows none"):
        check_workspace("initech", "team-a", allowed)
    with pytest.raises(CredentialPolicyError, match="allows none"):
        check_workspace("acme", "team-a", {})


def test_tenant_workspaces_is_read_from_json() -> None:
    settings = load_settings({"TENANT_WORKSPACES": '{"acme": ["team-a", "team-b"], "gx": []}'})
    assert settings.tenant_workspace_map == {
        "acme": frozenset({"team-a", "team-b"}),
        "gx": frozenset(),
    }
    assert load_settings({}).tenant_workspace_map == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{acme: [team-a]}", "not JSON"),
        ('["team-a"]', "valid dictionary"),
        ('{"acme": "team-a"}', "acme: Input should be a valid list"),
        ('{"acme": ["team a"]}', "acme.0: String should match pattern"),
        ('{"bad tenant": ["team-a"]}', "bad tenant.[key]"),
    ],
)
def test_a_bad_tenant_workspaces_stops_start_up_naming_it(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TENANT_WORKSPACES": value})
    (problem,) = caught.value.problems
    assert problem.startswith("TENANT_WORKSPACES: ")
    assert expected in problem
    assert 'e.g. {"acme": ["team-a"]}' in problem


def test_security_doc_lists_every_denied_name_and_prefix() -> None:
    """docs/security.md is the documented deny-list: it may not drift from the code."""
    text = SECURITY_DOC.read_text()
    finding_4 = text.split("### Finding 4", 1)[1].split("### Finding 5", 1)[0]
    for name in [*DENIED_NAMES, *PLATFORM_NAMES]:
        assert f"`{name}`" in finding_4, name
    for prefix, _ in DENIED_PREFIXES:
        assert f"`{prefix}*`" in finding_4, prefix

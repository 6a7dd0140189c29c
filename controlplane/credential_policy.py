"""What a tenant's credential document may ask of a node: which secret names, which workspace.

SkyPilot exports a task's secrets to ``setup:`` and ``run:``, which run ``pip install`` and the
model server under bash on a node that also holds the platform's keys. A secret named
``PIP_INDEX_URL``, ``LD_PRELOAD`` or ``BASH_ENV`` would therefore be arbitrary code on that node,
and one named ``R2_SECRET_ACCESS_KEY`` would replace the platform's key. So a name must look like
an environment variable *and* stay clear of the deny-list below; the names the platform itself
sets are denied too. The same check runs when a document is stored and again when a launch
assembles the task, so a document stored before a rule existed cannot slip through.

Messages name a denied name only when it is one of the fixed names below, and otherwise only the
denied prefix: a rejected name is never echoed, since it may be a pasted token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints

SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]*$"
SECRET_NAME_MAX = 128
SECRET_NAME_RE = re.compile(SECRET_NAME_PATTERN)
WORKSPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

SecretName = Annotated[
    str, StringConstraints(pattern=SECRET_NAME_PATTERN, max_length=SECRET_NAME_MAX)
]
Workspace = Annotated[str, StringConstraints(strip_whitespace=True, pattern=WORKSPACE_PATTERN)]

# Every name the platform puts in a node's task envs or secrets (controlplane/skypilot/task.py).
PLATFORM_NAMES = frozenset(
    {
        "CONTROL_PLANE_URL",
        "VLLM_VERSION",
        "TORCH_VERSION",
        "MODEL_ID",
        "NODE_ID",
        "TENANT_ID",
        "VLLM_PORT",
        "R2_ENDPOINT",
        "R2_BUCKET",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
    }
)

_SHELL = "changes how bash starts or what it runs"
_LOADER = "makes programs load other code"
DENIED_NAMES: Mapping[str, str] = {
    "PATH": "decides which programs run",
    "HOME": "moves every tool's configuration (pip.conf, .bashrc)",
    "SHELL": _SHELL,
    "ENV": _SHELL,
    "IFS": _SHELL,
    "PS1": _SHELL,
    "PS2": _SHELL,
    "PS3": _SHELL,
    "PS4": _SHELL,
    "PROMPT_COMMAND": _SHELL,
    "SHELLOPTS": _SHELL,
    "BASHOPTS": _SHELL,
    "CDPATH": _SHELL,
    "GLOBIGNORE": _SHELL,
    "INPUTRC": _SHELL,
    "NODE_OPTIONS": _LOADER,
    "NODE_PATH": _LOADER,
    "GCONV_PATH": _LOADER,
    "LOCPATH": _LOADER,
    "CLASSPATH": _LOADER,
    "JAVA_TOOL_OPTIONS": _LOADER,
    "PERLLIB": _LOADER,
    "TMPDIR": "moves where setup writes and runs temporary files",
    "VIRTUAL_ENV": "changes which Python environment runs",
    "REQUESTS_CA_BUNDLE": "changes which servers pip and the model download trust",
    "CURL_CA_BUNDLE": "changes which servers pip and the model download trust",
    "HTTP_PROXY": "routes the node's downloads through another server",
    "HTTPS_PROXY": "routes the node's downloads through another server",
    "ALL_PROXY": "routes the node's downloads through another server",
    "NO_PROXY": "routes the node's downloads through another server",
}
DENIED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LD_", "the dynamic loader's settings make programs load other code"),
    ("DYLD_", "the dynamic loader's settings make programs load other code"),
    ("BASH_", "bash's settings (BASH_ENV, BASH_FUNC_*) run code when bash starts"),
    ("PYTHON", "Python's settings (PYTHONPATH, PYTHONSTARTUP...) run code in every Python"),
    ("PIP_", "pip's settings change what the node's setup installs"),
    ("UV_", "uv's settings change what gets installed"),
    ("CONDA_", "conda's settings change which environment runs"),
    ("PERL5", "Perl's settings make it load other code"),
    ("PERL_", "Perl's settings make it load other code"),
    ("RUBY", "Ruby's settings make it load other code"),
    ("GEM_", "Ruby's settings make it load other code"),
    ("OPENSSL_", "OpenSSL's settings load engines and change what is trusted"),
    ("SSL_CERT_", "changes which servers the node trusts"),
    ("GIT_", "git's settings can run commands"),
    ("XDG_", "moves every tool's configuration"),
    ("CUDA_", "CUDA's settings change which devices and libraries the platform's server uses"),
    ("NCCL_", "NCCL's settings load network plugins into the platform's server"),
    ("VLLM_", "vLLM is configured by the platform, not the tenant"),
    ("TORCH_", "PyTorch is configured by the platform, not the tenant"),
    ("SKYPILOT_", "SkyPilot's own settings on the node"),
    ("SKYLET_", "SkyPilot's own settings on the node"),
    ("R2_", "the model cache's keys are the platform's; give a tenant's own in the 'r2' field"),
)
ALLOWED_HELP = (
    "upper-case letters, digits and '_', starting with a letter (e.g. HF_TOKEN), and not one of "
    "the denied names or prefixes listed in docs/security.md"
)


class R2Keys(BaseModel):
    """A tenant's own model-cache key pair, given to its nodes instead of the platform's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key_id: SecretStr
    secret_access_key: SecretStr


class CredentialPolicyError(ValueError):
    """A credential document asks for something the platform does not allow. Safe to show."""


def secret_name_problem(name: str) -> str | None:
    """Why a tenant may not use ``name`` as a secret, or None when it may."""
    if len(name) > SECRET_NAME_MAX or not SECRET_NAME_RE.match(name):
        return f"a name is not environment-variable-style; expected {ALLOWED_HELP}"
    if name in PLATFORM_NAMES:
        return f"{name} is set by the platform and cannot be overridden"
    if name in DENIED_NAMES:
        return f"{name} is denied: it {DENIED_NAMES[name]}"
    for prefix, reason in DENIED_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix} are denied: {reason}"
    return None


def check_secret_names(names: Iterable[str]) -> None:
    """Raise CredentialPolicyError naming every rule the names break (each rule once)."""
    problems = sorted({p for p in map(secret_name_problem, names) if p is not None})
    if problems:
        raise CredentialPolicyError("; ".join(problems))


def check_workspace(
    tenant: str, workspace: str | None, allowed: Mapping[str, frozenset[str]]
) -> None:
    """A tenant may only name a workspace TENANT_WORKSPACES lists for it."""
    if workspace is None:
        return
    permitted = allowed.get(tenant, frozenset())
    if workspace in permitted:
        return
    listed = ", ".join(sorted(permitted)) if permitted else "none"
    raise CredentialPolicyError(
        f"workspace {workspace!r} is not allowed for tenant {tenant!r}: TENANT_WORKSPACES "
        f"allows {listed} for it; add it there (JSON such as "
        f'{{"{tenant}": ["{workspace}"]}}) or drop the workspace from the credential document'
    )

"""``python -m controlplane.credentials_cli put|rotate|list|delete``: manage tenant credentials.

Secrets are read from a file or stdin, never from the command line (where ``ps`` and shell
history would keep them), and nothing printed contains a secret value. Secret names must pass
controlplane.credential_policy, and a workspace must be one TENANT_WORKSPACES allows for the
tenant: both are refused here, before anything is stored. Exit codes: 0 done,
1 invalid input, undecryptable rows or a database problem, 2 configuration problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from controlplane.config import ConfigError, load_settings
from controlplane.credential_policy import CredentialPolicyError, check_workspace
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.repository import CredentialRepository
from controlplane.db.url import EXPECTED, normalise_database_url
from controlplane.spec import PROVIDERS
from controlplane.vault import CredentialPayload, CredentialStore, Vault, VaultError

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # as controlplane.spec.TenantId
DOCUMENT_EXAMPLE = '{"workspace": "team-a", "secrets": {"HF_TOKEN": "..."}}'
# Optional: "r2": {"access_key_id": "...", "secret_access_key": "..."}, the tenant's own R2 keys.


class UsageError(Exception):
    """Bad input from the person at the keyboard; the message says what to fix."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.credentials_cli",
        description="Store, list, rotate and delete tenants' sealed cloud credentials.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    put = commands.add_parser("put", help="seal and store a tenant's credentials for a provider")
    _target(put)
    put.add_argument(
        "--file",
        required=True,
        metavar="PATH",
        help=f"JSON document such as {DOCUMENT_EXAMPLE}, or - to read it from stdin",
    )
    commands.add_parser("rotate", help="re-seal every row under the current key")
    commands.add_parser("list", help="tenants, providers, key ids and update times (no secrets)")
    _target(commands.add_parser("delete", help="remove a tenant's credentials for a provider"))
    return parser


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--provider", required=True)


def _check_target(tenant: str, provider: str) -> None:
    if not TENANT_RE.match(tenant):
        raise UsageError(f"--tenant {tenant!r}: expected letters, digits, '_' or '-' (max 64)")
    if provider not in PROVIDERS:
        raise UsageError(f"--provider {provider!r}: expected one of {', '.join(PROVIDERS)}")


def read_document(source: str) -> CredentialPayload:
    """Parse and validate a credential document; errors name fields, never values."""
    if source.lstrip().startswith("{"):
        # Not echoed: it is the document itself, secrets and all.
        raise UsageError(
            "--file takes a path or -, not the document: secrets on a command line end up in "
            "shell history and process listings; write it to a file or pipe it to stdin"
        )
    shown = "stdin" if source == "-" else source
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"cannot read --file {shown}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--file {shown} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"expected {DOCUMENT_EXAMPLE}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"--file {shown}: expected a JSON object such as {DOCUMENT_EXAMPLE}")
    try:
        return CredentialPayload.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, data) for error in exc.errors(include_input=False))
        raise UsageError(f"invalid credential document in {shown}: {problems}") from None


def _describe(error: Any, data: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if loc[:1] == ["secrets"] and loc[-1:] == ["[key]"]:
        # A bad name might be a pasted token: say which entry, not what it says.
        names = list(data.get("secrets") or {})
        position = names.index(loc[1]) + 1 if loc[1] in names else 0
        return (
            f"secrets: name #{position} is not an environment-variable-style name "
            "(expected upper-case letters, digits and '_', e.g. HF_TOKEN)"
        )
    return f"{'.'.join(loc) or 'document'}: {message}"


def _print(document: object) -> None:
    print(json.dumps(document, default=str, sort_keys=False))


async def _execute(
    args: argparse.Namespace, url: str, vault: Vault | None, payload: CredentialPayload | None
) -> int:
    engine = create_engine(url, pool_size=1, max_overflow=1)
    try:
        repository = CredentialRepository(engine)
        if args.command == "list":
            rows = await repository.all()
            _print(
                {
                    "credentials": [
                        {
                            "tenant": row.tenant,
                            "provider": row.provider,
                            "key_id": row.key_id,
                            "updated_at": row.updated_at.isoformat(),
                        }
                        for row in rows
                    ]
                }
            )
            return 0
        if args.command == "delete":
            deleted = await repository.delete(args.tenant, args.provider)
            _print({"tenant": args.tenant, "provider": args.provider, "deleted": deleted})
            return 0
        assert vault is not None
        store = CredentialStore(vault, repository)
        if payload is not None:
            ref = await store.put(args.tenant, args.provider, payload)
            _print(
                {
                    "tenant": ref.tenant,
                    "provider": ref.provider,
                    "key_id": ref.key_id,
                    "stored": True,
                }
            )
            return 0
        report = await store.rotate()
        _print(report.model_dump())
        return 1 if report.failed else 0
    finally:
        await engine.dispose()


def run(argv: Sequence[str] | None = None) -> int:
    """The command, returning its exit code (``main`` exits the process with it)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = load_settings()
        if not settings.database_url:
            raise ConfigError([f"DATABASE_URL: not set; expected {EXPECTED}"])
        try:
            url = normalise_database_url(settings.database_url)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        if args.command in ("put", "delete"):
            _check_target(args.tenant, args.provider)
        # Everything that can be checked without the database is checked first.
        vault = Vault.from_settings(settings) if args.command in ("put", "rotate") else None
        payload = read_document(args.file) if args.command == "put" else None
        if payload is not None:
            try:
                check_workspace(args.tenant, payload.workspace, settings.tenant_workspace_map)
            except CredentialPolicyError as exc:
                raise UsageError(str(exc)) from None
        return asyncio.run(_execute(args, url, vault, payload))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (UsageError, VaultError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        print(f"error: database: {summarize_database_error(exc)}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> NoReturn:
    code = run(argv)
    # Leave without interpreter teardown, like the other commands (temporalio-using processes
    # can crash there); flush first, since os._exit does not.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

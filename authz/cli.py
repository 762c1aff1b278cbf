"""`warden policy ...` and `warden token ...`: administering decisions from a shell."""

import getpass
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from audit.db import READ_ONLY
from authz.decider import Request
from authz.rules import PolicyFileError, name_problem, parse_policy_csv, policy_to_csv
from authz.tokens import SCOPES, TokenError

policy_cli = AppGroup("policy", help="Load, export and try the Casbin policy.")
token_cli = AppGroup("token", help="Service tokens for the HTTP API.")
user_cli = AppGroup("user", help="Accounts of people who sign in to the pages.")


def _warden():
    return current_app.extensions["warden"]


def cli_actor() -> str:
    """Who a CLI change is recorded as: the operating-system user running it."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


@policy_cli.command("load")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))  # -sig: a BOM is not a row type
@click.option("--replace", is_flag=True, help="Make the file the whole policy (rows not in it are removed).")
@click.option("--allow-empty", is_flag=True, help="With --replace, let a file without rows empty the policy.")
def policy_load(file, replace: bool, allow_empty: bool) -> None:
    """Load Casbin CSV rows (`p, ...` and `g, ...`); any bad row and nothing is loaded."""
    try:
        policy = parse_policy_csv(file.read())
    except PolicyFileError as exc:
        for line, message in exc.errors:
            click.echo(f"{file.name}:{line}: {message}", err=True)
        raise click.ClickException(f"{len(exc.errors)} bad row(s); nothing was loaded") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{file.name} is not UTF-8 text; nothing was loaded") from None
    if replace and not len(policy) and not allow_empty:
        raise click.ClickException(f"{file.name} has no rows: --replace would remove the whole policy and deny "
                                   "everything; add --allow-empty if that is what you want")
    change = _warden().policies.apply(policy, replace=replace, actor=cli_actor())
    if not change.added and not change.removed:
        click.echo(f"policy unchanged (version {change.version})")
    else:
        click.echo(f"added {change.added}, removed {change.removed} row(s); policy version {change.version}")


@policy_cli.command("export")
def policy_export() -> None:
    """Print the stored policy as Casbin CSV."""
    click.echo(policy_to_csv(_warden().policies.export()), nl=False)


@policy_cli.command("check")
@click.argument("subject")
@click.argument("domain")
@click.argument("object")
@click.argument("action")
@click.option("--workflow", default="", help="The workflow (purpose) of the access; none if omitted.")
def policy_check(subject, domain, object, action, workflow) -> None:
    """Say whether the policy allows a request, and why; exit 0 if allowed, 1 if denied.

    A dry run: nothing is written to the ledger.
    """
    for value, what in ((subject, "subject"), (domain, "domain"), (object, "object"), (action, "action")):
        if problem := name_problem(value, what):
            raise click.BadParameter(problem, param_hint=what.upper())
    if workflow and (problem := name_problem(workflow, "workflow")):
        raise click.BadParameter(problem, param_hint="--workflow")
    warden = _warden()
    with warden.engine.connect().execution_options(**READ_ONLY) as conn:
        snapshot = warden.policies.snapshot(conn)
    decision = snapshot.decider.decide(Request(subject, domain, object, action, workflow))
    click.echo(f"{'ALLOWED' if decision.allowed else 'DENIED'}: {decision.reason}")
    for rule in decision.matched:
        click.echo(f"  matched: p, {', '.join(rule)}")
    click.echo(f"  policy version {snapshot.version}")
    sys.exit(0 if decision.allowed else 1)


@token_cli.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="What the token may do; repeat for several.")
@click.option("--rotate", is_flag=True, help="Replace the token of this name if it exists.")
def token_create(name: str, scopes: tuple[str, ...], rotate: bool) -> None:
    """Create a service token and print it once; only its hash is stored."""
    try:
        token = _warden().tokens.create(name, list(scopes), actor=cli_actor(), rotate=rotate)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)
    click.echo(f"token {name!r} with scope(s) {', '.join(sorted(set(scopes)))}; it is shown only this once.",
               err=True)


@user_cli.command("create")
@click.argument("name")
@click.option("--role", required=True, help="admin or security-reviewer (both must use TOTP), user, or a role "
                                            "the policy grants.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of a prompt.")
def user_create(name: str, role: str, password_stdin: bool) -> None:
    """Create an account; admins and security reviewers enroll TOTP at first sign-in."""
    from authz.accounts import MFA_ROLES, AccountError

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        warden = _warden()
        policy = warden.policies.export()
        # A role is what a role row names, or a rule grants to under the role: prefix (a role nobody holds yet).
        policy_roles = frozenset({r.role for r in policy.roles}
                                 | {r.subject for r in policy.rules if r.subject.startswith("role:")})
        account = warden.accounts.create(name, role, password, actor=cli_actor(), policy_roles=policy_roles)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"account {account.name!r} ({account.role}) created" +
               ("; it must enroll TOTP at first sign-in" if account.role in MFA_ROLES else ""))

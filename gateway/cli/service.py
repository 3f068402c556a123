"""`rentgate install-service`: put the systemd units, the service user and the data dir in place.

    rentgate install-service [--prefix /] [--config FILE] [--dry-run] [--force]

Units go to `<prefix>/etc/systemd/system/`, the sysusers entry to
`<prefix>/usr/lib/sysusers.d/rentgate.conf`, and `<prefix>/var/lib/rentgate` is
created. With the default prefix `/` it needs root and also creates the user
(`systemd-sysusers`, or `useradd` where that is missing). Another prefix stages
an image without privileges: the image's systemd-sysusers creates the user at
boot, and `StateDirectory=` hands the data dir to it on the first start.

An installed file that differs from ours (edited locally, or from another
release) is never replaced without `--force`; when one is refused, nothing at
all is written. Exit status: 0 done, 1 refused or failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from gateway.errors import RentgateError

EXIT_FAILED = 1
EXIT_USAGE = 2

USER = "rentgate"
SERIAL_GROUP = "dialout"
GATEWAY_UNIT = "rentgate.service"
WEB_UNIT = "rentgate-web.service"
UNITS = (
    GATEWAY_UNIT,
    WEB_UNIT,
    "rentgate-terminal-sync.service",
    "rentgate-terminal-sync.timer",
)
WEB_USER = "rentgate-web"
SYSUSERS_SOURCE = "rentgate.sysusers"
UNIT_DIR = Path("etc/systemd/system")
SYSUSERS_TARGET = Path("usr/lib/sysusers.d/rentgate.conf")
DATA_DIR = Path("var/lib/rentgate")
WEB_STATE_DIR = Path("var/lib/rentgate-web")
DEFAULT_CONFIG = Path("/etc/rentgate/gateway.toml")
EXEC = Path("/opt/rentgate/.venv/bin/rentgate")
HIDDEN_FROM_SERVICE = (Path("/home"), Path("/root"), Path("/run/user"), Path("/tmp"))  # noqa: S108
"""ProtectHome= and PrivateTmp= hide these from the service: a config there cannot be read."""
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+@:-]+")


class InstallProblem(Enum):
    """Why the command did nothing; callers (and tests) branch on it."""

    NO_UNITS = "unit files not found"
    BAD_CONFIG = "unusable --config path"
    NOT_ROOT = "needs root"
    CHANGED = "installed file differs"
    FAILED = "could not install"


class InstallError(RentgateError):
    def __init__(self, problem: InstallProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem


class InstallOutcome(Enum):
    NEW = "new"
    SAME = "unchanged"
    REPLACED = "replaced"
    CHANGED = "CHANGED"


@dataclass(frozen=True)
class Planned:
    target: Path
    content: str
    outcome: InstallOutcome


def default_units_dir() -> Path:
    """`systemd/` of the checkout this package runs from (the /opt/rentgate layout)."""
    return Path(__file__).resolve().parents[2] / "systemd"


def add_parsers(commands: Any) -> None:
    """Register `install-service` on the main parser's subcommands."""
    install = commands.add_parser(
        "install-service", help="install the systemd units, the service user and the data dir"
    )
    install.add_argument(
        "--prefix", type=Path, default=Path("/"), help="root to install into (default /)"
    )
    install.add_argument(
        "--config",
        dest="service_config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"config file the gateway unit runs with (default {DEFAULT_CONFIG})",
    )
    install.add_argument(
        "--units", type=Path, default=None, help="directory of unit files (default: the checkout's)"
    )
    install.add_argument(
        "--dry-run", action="store_true", help="say what would be done, do nothing"
    )
    install.add_argument("--force", action="store_true", help="replace installed files that differ")


def run_install_service(args: argparse.Namespace) -> int:
    """Install, or say exactly why not."""
    try:
        return _install(
            prefix=args.prefix,
            config=args.service_config,
            units_dir=args.units or default_units_dir(),
            dry_run=args.dry_run,
            force=args.force,
        )
    except InstallError as exc:
        print(f"rentgate install-service: {exc}", file=sys.stderr)
        return (
            EXIT_FAILED
            if exc.problem in (InstallProblem.CHANGED, InstallProblem.FAILED)
            else EXIT_USAGE
        )


def plan(prefix: Path, config: Path, units_dir: Path, *, force: bool) -> list[Planned]:
    """What each file would become, compared with what is installed now."""
    check_config_path(config)
    sources = [units_dir / name for name in (*UNITS, SYSUSERS_SOURCE)]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise InstallError(
            InstallProblem.NO_UNITS,
            f"{', '.join(missing)} (run from a checkout, or give --units DIR)",
        )
    planned = []
    for source in sources:
        content = source.read_text(encoding="utf-8")
        if source.name in (GATEWAY_UNIT, WEB_UNIT):
            content = with_config(content, config, source.name)
        target = prefix / (SYSUSERS_TARGET if source.name == SYSUSERS_SOURCE else UNIT_DIR)
        if source.name != SYSUSERS_SOURCE:
            target = target / source.name
        planned.append(Planned(target, content, _compare(target, content, force=force)))
    return planned


def check_config_path(config: Path) -> None:
    """Absolute, plain, and visible to the sandboxed service (`..` is resolved first)."""
    config = Path(os.path.normpath(config))
    if not config.is_absolute() or not _SAFE_PATH.fullmatch(str(config)):
        raise InstallError(
            InstallProblem.BAD_CONFIG,
            f"{config} must be an absolute path of letters, digits and ._/+@:- only",
        )
    for hidden in HIDDEN_FROM_SERVICE:
        if config.is_relative_to(hidden):
            raise InstallError(
                InstallProblem.BAD_CONFIG,
                f"{config} is under {hidden}, which the service cannot see",
            )


def with_config(unit: str, config: Path, name: str = GATEWAY_UNIT) -> str:
    """A unit (the door core's or the web's) with its ExecStart's `--config` set to `config`."""
    pattern = re.compile(rf"^(ExecStart=.*--config )({re.escape(str(DEFAULT_CONFIG))})$", re.M)
    if not pattern.search(unit):
        raise InstallError(InstallProblem.NO_UNITS, f"{name} has no ExecStart with --config")
    return pattern.sub(lambda match: match.group(1) + str(config), unit)


def _compare(target: Path, content: str, *, force: bool) -> InstallOutcome:
    try:
        installed = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return InstallOutcome.NEW
    except (OSError, UnicodeDecodeError) as exc:
        raise InstallError(InstallProblem.FAILED, f"cannot read {target}: {exc}") from exc
    if installed == content:
        return InstallOutcome.SAME
    return InstallOutcome.REPLACED if force else InstallOutcome.CHANGED


def _install(*, prefix: Path, config: Path, units_dir: Path, dry_run: bool, force: bool) -> int:
    planned = plan(prefix, config, units_dir, force=force)
    system = prefix.resolve() == Path("/")
    for item in planned:
        print(f"{item.outcome.value:<10} {item.target}")
    changed = [item.target for item in planned if item.outcome is InstallOutcome.CHANGED]
    if changed:
        raise InstallError(
            InstallProblem.CHANGED,
            f"{len(changed)} installed file(s) differ from this release and were left alone: "
            "nothing was written. Compare them (`systemctl cat`, diff), then rerun with --force "
            "to replace them (local changes belong in drop-ins: systemctl edit rentgate)",
        )
    account = _account_command(prefix / SYSUSERS_TARGET) if system else None
    if dry_run:
        if account is not None:
            print("would run: " + " ".join(account))
        print(f"would create {prefix / DATA_DIR}; dry run: nothing written")
        return 0
    if system and os.geteuid() != 0:
        raise InstallError(
            InstallProblem.NOT_ROOT, "run as root, or give --prefix DIR to stage into a directory"
        )
    try:
        for item in planned:
            if item.outcome in (InstallOutcome.NEW, InstallOutcome.REPLACED):
                _write(item.target, item.content)
        data_dir = prefix / DATA_DIR
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (prefix / WEB_STATE_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
        if system:
            if account is not None:
                subprocess.run(account, check=True, timeout=60)
            user = pwd.getpwnam(USER)
            os.chown(data_dir, user.pw_uid, user.pw_gid)
            print(f"user {USER} ready; {data_dir} owned by it")
            with contextlib.suppress(KeyError):  # made by sysusers; by hand without it
                web = pwd.getpwnam(WEB_USER)
                os.chown(prefix / WEB_STATE_DIR, web.pw_uid, web.pw_gid)
        else:
            print(f"{data_dir} created; StateDirectory= gives it to {USER} on the first start")
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        raise InstallError(InstallProblem.FAILED, str(exc)) from exc
    _next_steps(prefix, config, system=system)
    return 0


def _account_command(sysusers_file: Path) -> list[str] | None:
    """Create the user from our sysusers entry, or with useradd where sysusers is missing.

    None when there is nothing to do (no sysusers, and the user exists already).
    """
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is not None:
        return [sysusers, str(sysusers_file)]
    if _user_exists():
        return None
    groups = []
    try:
        grp.getgrnam(SERIAL_GROUP)
        groups = ["--groups", SERIAL_GROUP]
    except KeyError:
        pass
    return [
        "useradd",
        "--system",
        "--user-group",
        *groups,
        "--home-dir",
        f"/{DATA_DIR}",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "Rentgate gateway",
        USER,
    ]


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def _write(target: Path, content: str) -> None:
    """Whole file or nothing: a crash leaves the old unit or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(content, encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, target)


def _next_steps(prefix: Path, config: Path, *, system: bool) -> None:
    steps = []
    if not (prefix / config.relative_to("/")).is_file():
        steps.append(
            f"write {config} (root:{USER}, mode 0640) with data_dir under /{DATA_DIR}, "
            f"e.g. /{DATA_DIR}/gateway, [gateway] store_shared_with_group = true and [api]"
            f' state_dir = "/{WEB_STATE_DIR}" (the web runs as {WEB_USER}, group {USER})'
        )
    if not (prefix / EXEC.relative_to("/")).exists():
        steps.append(
            f"install the release: /opt/rentgate with its venv ({EXEC} is missing; see README)"
        )
    if system:
        steps += [
            "systemctl daemon-reload",
            "systemctl enable --now rentgate.service rentgate-web.service   # on the gateway",
            "systemctl enable --now rentgate-terminal-sync.timer   # on a terminal host",
        ]
    else:
        steps.append(
            f"systemctl --root={prefix} enable rentgate.service   # or, on a terminal image,"
            " rentgate-terminal-sync.timer"
        )
    print("next:")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")

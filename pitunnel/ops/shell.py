"""Shell text the operations share: quoting, backups for rollback, and writes that never follow a link
another account could have planted."""

from __future__ import annotations

import shlex


BACKUP_DIR = "/var/backups/pitunnel"


def q(text: str) -> str:
    return shlex.quote(text)


def backup_path(path: str) -> str:
    return f"{BACKUP_DIR}/{path.strip('/').replace('/', '%')}"


def backup_commands(path: str) -> list[str]:
    """Keep the old file (or the fact that there was none) so a failed change can be undone."""
    b = q(backup_path(path))
    return [f"mkdir -p {BACKUP_DIR} && chmod 700 {BACKUP_DIR}",
            f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then rm -f {b}.absent; cp -a {q(path)} {b}; "
            f"else rm -rf {b}; : > {b}.absent; fi"]


def restore_commands(path: str) -> list[str]:
    b = q(backup_path(path))
    return [f"if [ -e {b}.absent ]; then rm -f {q(path)} {b}.absent; elif [ -e {b} ] || [ -L {b} ]; then mv -f {b} {q(path)}; fi"]


def drop_backup_commands(path: str) -> list[str]:
    b = q(backup_path(path))
    return [f"rm -f {b} {b}.absent"]


# ------------------------------------------------------------------ writing where other accounts can write
# Root must never follow a symbolic link that another account could have planted: a link in a directory
# that someone else can write (the tunnel account's ~/.ssh, a login user's home) could send root's write,
# chown or chmod to /etc/shadow or /root/.ssh. So a write walks to its directory one component at a time
# (`cd -P`, checking that the directory entered is the one looked at); it follows a link only where root
# alone can write, and refuses it elsewhere; then it writes in a private directory of its own (made by
# mktemp -d, where nobody else can put anything) and renames the file into place, which replaces the
# name itself and never follows a link.
ENTER_FUNCTION = r"""pitunnel_enter() {
  cd / || exit 1
  _ifs=$IFS; IFS=/; set -f
  for c in $1; do
    IFS=$_ifs
    [ -n "$c" ] || continue
    if [ -L "$c" ]; then
      if [ "$(stat -c %u .)" != 0 ] || [ $(( 0$(stat -c %a .) & 022 )) -ne 0 ]; then
        echo "refusing to write $2: $(pwd -P)/$c is a symbolic link in a directory that $(stat -c %U .) owns (mode $(stat -c %a .)), where a planted link could send root's write anywhere: remove the link and run again" >&2
        exit 1
      fi
      cd -P "$c" || exit 1
    else
      [ -e "$c" ] || mkdir "$c" || exit 1
      [ -d "$c" ] || { echo "refusing to write $2: $(pwd -P)/$c is not a directory" >&2; exit 1; }
      i=$(stat -c %d:%i "$c") || exit 1
      cd -P "$c" || exit 1
      [ "$(stat -c %d:%i .)" = "$i" ] || { echo "refusing to write $2: $(pwd -P) changed while it was entered" >&2; exit 1; }
    fi
  done
  IFS=$_ifs; set +f
}"""


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


def write_file_commands(path: str, blob: str, owner: str, group: str, mode: int) -> list[str]:
    """Put base64 `blob` at `path` with this owner and mode, never following a link another account
    could have planted: not the file itself (refused), nor any directory on the way (see ENTER_FUNCTION)."""
    parent, name = _split(path)
    return [
        f"( {ENTER_FUNCTION}",
        f"pitunnel_enter {q(parent)} {q(path)}",
        f"n={q(name)}",
        f"if [ -L \"$n\" ]; then echo \"refusing to write {_dq(path)}: it is a symbolic link (to $(readlink \"$n\")), "
        "and pitunnel replaces only regular files: remove the link and run again\" >&2; exit 1; fi",
        f"if [ -d \"$n\" ]; then echo \"refusing to write {_dq(path)}: it is a directory\" >&2; exit 1; fi",
        "t=$(mktemp -d \".$n.pitunnel-XXXXXX\")",
        "i=$(stat -c %d:%i \"$t\"); cd -P \"$t\"; [ \"$(stat -c %d:%i .)\" = \"$i\" ] || exit 1",
        f"printf %s {blob} | base64 -d > new",
        f"chown -h {q(owner)}:{q(group)} new && chmod {mode:o} new",
        "mv -f -T new \"../$n\"",
        "cd -P .. && rmdir \"$t\" 2>/dev/null || true )",
    ]


def directory_commands(path: str, owner: str, group: str, mode: int) -> list[str]:
    """A directory with this owner and mode, made and changed without following a planted link."""
    return [f"( {ENTER_FUNCTION}", f"pitunnel_enter {q(path)} {q(path)}",
            f"chown {q(owner)}:{q(group)} . && chmod {mode:o} . )"]


def _dq(text: str) -> str:
    """`text` for inside a double-quoted shell string."""
    return "".join("\\" + c if c in '"$`\\' else c for c in text)

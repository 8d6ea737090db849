"""Files of the embedded defaults that hold secrets: readable by their owner only.

The dev state directory holds the API tokens, the cluster's private keys, an admin kubeconfig
and Temporal's database; on a shared machine any of them hands over the environment. So
directories are made 0700 and files 0600 whoever creates them (the umask may be 022), and
files are written whole (a reader never sees half a file) with their mode set before any
byte is in them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed, and make ``path`` itself 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    path.chmod(PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 from the start."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def secure_tree(root: Path) -> None:
    """Make every directory under ``root`` 0700 and every regular file 0600.

    For what other programs write (openssl keys, etcd's data, Temporal's database and its
    journal files) and for state directories from before these modes were enforced.
    """
    if not root.is_dir():
        return
    root.chmod(PRIVATE_DIR)
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames:
            with contextlib.suppress(FileNotFoundError):
                (Path(directory) / name).chmod(PRIVATE_DIR)
        for name in filenames:
            path = Path(directory) / name
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and not path.is_symlink():
                    path.chmod(PRIVATE_FILE)

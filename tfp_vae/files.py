"""Files and directories that appear whole or not at all.

Everything the project writes for others to read -- run directories, exported
versions, server config files, the batch job's shards and manifests -- is written
under a temporary name in the same directory and renamed into place. A rename within
one file system is atomic, so a reader (a polling model server, a resumed job, a
person) sees the old state or the new one, never half of it, and a crash leaves only
a temporary that ``remove_stale_temporaries`` can recognise and clear.

Temporary names: ``.<final name>.tmp-<pid>-<random hex>``. They start with a dot
and are not integers, so TF Serving never takes one for a model version. The pid
tells whether the writer is still alive.

The module itself uses only the standard library, but importing it loads the
``tfp_vae`` package and so TensorFlow: TensorFlow-free code (the REST client, the
job's planning) does not import it.
"""

import contextlib
import os
import re
import secrets
import shutil

_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def require_new_directory(path, what="Run directory", flag="--out"):
    """FileExistsError unless ``path`` is free and its nearest existing ancestor a directory."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        raise FileExistsError(
            f"{what} {path} already exists; choose another {flag} or remove it first."
        )
    probe = os.path.dirname(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise FileExistsError(f"Cannot create {what.lower()} {path}: {probe} is a file, not a directory.")
    return path


def temporary_path(final_path):
    """A fresh temporary name beside ``final_path`` (see the module docstring)."""
    directory, name = os.path.split(os.path.abspath(final_path))
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path, data):
    """Writes ``data`` (bytes or str, UTF-8) to ``path`` via a synced temporary + rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    temp = temporary_path(path)
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_directory(final_path, replace=False):
    """Yields a temporary directory that becomes ``final_path`` when the block succeeds.

    On an exception the temporary is removed and ``final_path`` is untouched. Without
    ``replace``, an existing ``final_path`` raises FileExistsError before anything is
    written (and again at the rename, if it appeared meanwhile).
    """
    final_path = os.path.abspath(final_path)
    if os.path.exists(final_path) and not replace:
        raise FileExistsError(f"{final_path} already exists")
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    temp = temporary_path(final_path)
    os.makedirs(temp)
    try:
        yield temp
        if replace and os.path.isdir(final_path):
            shutil.rmtree(final_path)
        elif os.path.exists(final_path):
            raise FileExistsError(f"{final_path} already exists")
        os.rename(temp, final_path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_directory(os.path.dirname(final_path))


def pid_alive(pid):
    """True if a process with this pid exists (ours included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory, finals=None):
    """Removes temporaries in ``directory`` whose writer is gone; returns their paths.

    ``finals`` (optional) limits it to temporaries of those final names. A temporary of
    a live process other than this one is left alone; this process's own are removed
    (it is not writing them any more when it calls this).
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in sorted(os.listdir(directory)):
        match = _TEMPORARY.match(entry)
        if not match or (finals is not None and match.group("final") not in finals):
            continue
        pid = int(match.group("pid"))
        if pid != os.getpid() and pid_alive(pid):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
        removed.append(path)
    return removed


def is_temporary(name):
    """True for a name ``temporary_path`` makes."""
    return bool(_TEMPORARY.match(name))

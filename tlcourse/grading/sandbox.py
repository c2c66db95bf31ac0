"""One bubblewrap sandbox per submission: what the student's code can see, reach and use.

:func:`start` runs :mod:`tlcourse.grading.runner` under ``bwrap`` (Debian package
``bubblewrap``, https://github.com/containers/bubblewrap) with

- **nothing of the host but what grading needs, read-only**: ``/usr`` (and its ``/bin``, ``/lib``
  links), a few files of ``/etc``, the Python installation and its environment, the ``tlcourse``
  package and the data folder (``TLCOURSE_DATA``);
- **one writable folder**, the scratch folder, mounted at ``/sandbox``: a fresh ``home``
  (``HOME``, ``IPYTHONDIR``, Matplotlib's and Jupyter's folders), ``work`` (the copy of the
  notebook, the kernel's working folder), ``cache`` (a private copy of the model and data cache,
  ``TLCOURSE_CACHE``), ``tmp`` (``/tmp``) and ``out`` (the collected answers);
- **no network** (a network namespace with only loopback, which the kernel's own sockets use),
  its own PID, IPC and UTS namespaces (it sees no other process: no ``/proc/<ppid>/cwd`` into the
  submissions folder), a new session (no terminal injection), and an environment holding only
  the variables listed in :func:`_environment` (no secret of the instructor's shell);
- **limits** set by the runner: data segment (memory), CPU seconds, processes, file size;
- **the whole process tree killed** when grading ends: the PID namespace dies with its first
  process, and ``--die-with-parent`` ties that to the grader.

Run as root (the course's CI), bwrap does not create a user namespace and the runner switches to
an unprivileged uid (:data:`UID_BASE` plus a counter) before any student code runs; as another
user, bwrap's user namespace maps that user and forbids nested ones (``--disable-userns``).

Where bwrap is missing or cannot start (macOS, a container without namespaces) :func:`available`
says why, and :func:`start` with ``isolate=False`` runs the runner as a plain subprocess in its
own session with the same scrubbed environment: still a separate process with limits that is
killed at the end, but **not isolated**.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

__all__ = ["available", "Limits", "Scratch", "make_scratch", "start", "UID_BASE"]

UID_BASE = 62000  # unprivileged uids for sandboxes when grading runs as root
_uids = itertools.count()
_uid_lock = threading.Lock()
MOUNT = "/sandbox"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-submission limits; ``memory`` in bytes is the data-segment limit (``RLIMIT_DATA``)."""

    cell_timeout: float = 60.0
    total_timeout: float = 300.0
    collect_timeout: float = 30.0
    memory: int = 4 * 2**30
    nproc: int = 512
    fsize: int = 512 * 2**20

    def __post_init__(self):
        for name in ("cell_timeout", "total_timeout", "collect_timeout", "memory"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name.replace('_', ' ')} must be positive, got "
                                 f"{getattr(self, name)!r}")

    @property
    def cpu_seconds(self) -> int:
        return int(self.total_timeout + 60 + 30 * self.collect_timeout)


@dataclasses.dataclass
class Scratch:
    """The host folder mounted at ``/sandbox``; removed by :meth:`remove`."""

    root: Path
    uid: int | None

    def __getattr__(self, part):  # scratch.home, scratch.work, scratch.out, ...
        if part in ("home", "work", "cache", "tmp", "out"):
            return self.root / part
        raise AttributeError(part)

    def inside(self, path: Path) -> str:
        """Where a path under the scratch folder appears inside the sandbox."""
        return f"{MOUNT}/{Path(path).relative_to(self.root).as_posix()}"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _copy_cache(source: Path | None, target: Path) -> None:
    if source is None or not source.is_dir():
        target.mkdir()
        return
    # the models and decoded datasets only: the copy is private, whatever the notebook does to it
    shutil.copytree(source, target, symlinks=False,
                    ignore=shutil.ignore_patterns("*.tmp", "*.part", "*.lock"))


def make_scratch(cache: Path | None, isolate: bool) -> Scratch:
    """A fresh scratch folder with ``home work cache tmp out``, owned by the sandbox's user."""
    root = Path(tempfile.mkdtemp(prefix="tlcourse-sandbox-"))
    for part in ("home", "work", "tmp", "out"):
        (root / part).mkdir()
    _copy_cache(cache, root / "cache")
    mpl = _matplotlib_cache()
    if mpl is not None:  # saves a font scan of several seconds per submission
        (root / "home" / ".matplotlib").mkdir()
        for font_list in mpl.glob("fontlist-*.json"):
            shutil.copy(font_list, root / "home" / ".matplotlib")
    uid = None
    if isolate and os.getuid() == 0:
        with _uid_lock:
            uid = UID_BASE + next(_uids) % 1000
        for path in [root, *root.rglob("*")]:
            os.lchown(path, uid, uid)
    os.chmod(root, 0o700)
    return Scratch(root, uid)


@functools.lru_cache(maxsize=1)
def _matplotlib_cache() -> Path | None:
    try:
        import matplotlib

        path = Path(matplotlib.get_cachedir())
    except Exception:
        return None
    return path if path.is_dir() else None


def _python_paths() -> list[Path]:
    """Read-only paths the sandboxed Python needs: its installation, environment and packages."""
    import tlcourse

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(tlcourse.__file__).resolve().parent,
             *(Path(p) for p in site.getsitepackages()),
             Path(sysconfig.get_paths()["stdlib"]),
             Path(sys.executable).resolve().parent.parent}
    for path in list(paths):
        paths.add(path.resolve())
    kept = sorted(p for p in paths if p.is_dir() and p != Path("/"))
    return [p for p in kept if not any(p != q and q in p.parents for q in kept)]


def _environment(scratch: Scratch, data: str | None) -> dict[str, str]:
    home = f"{MOUNT}/home"
    env = {
        "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib",
        "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jupyter-data",
        "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter-runtime", "XDG_CACHE_HOME": f"{home}/.cache",
        "TMPDIR": "/tmp", "TLCOURSE_CACHE": f"{MOUNT}/cache", "TLCOURSE_GRADING": "sandbox",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "2", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": "",
    }
    if data:
        env["TLCOURSE_DATA"] = data
    return env


def _bwrap_argv(scratch: Scratch, data: str | None) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox"]
    if os.getuid() != 0:
        argv += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib32", "/lib64", "/sbin", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for name in ("passwd", "group", "nsswitch.conf", "hosts", "ld.so.cache", "ld.so.conf",
                 "localtime", "ssl", "ca-certificates", "alternatives", "fonts"):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # /tmp first: the binds below may lie under it (a checkout or an environment in /tmp)
    argv += ["--bind", str(scratch.tmp), "/tmp"]
    binds = [str(p) for p in _python_paths()] + ([data] if data and os.path.isdir(data) else [])
    # bwrap would create the folders above a bind with mode 0700, closed to the sandbox's user
    parents = sorted({str(parent) for b in binds for parent in Path(b).parents
                      if str(parent) not in ("/", "/usr") and not str(parent).startswith("/usr/")}
                     - set(binds), key=lambda p: p.count("/"))
    for parent in parents:
        argv += ["--perms", "0755", "--dir", parent]
    for path in binds:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", str(scratch.root), MOUNT,
             "--chdir", f"{MOUNT}/work", "--clearenv"]
    for key, value in _environment(scratch, data).items():
        argv += ["--setenv", key, value]
    return argv


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """``(True, "bubblewrap 0.8.0")``, or ``(False, why not)``; probed once per process."""
    if not sys.platform.startswith("linux"):
        return False, f"bubblewrap sandboxes need Linux; this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return False, ("bubblewrap (bwrap) is not installed; on Debian or Ubuntu: "
                       "apt-get install bubblewrap")
    scratch = make_scratch(None, isolate=True)
    try:
        argv = _bwrap_argv(scratch, None) + ["--", sys.executable, "-c", "import tlcourse"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bubblewrap could not start a sandbox ({exc})"
    finally:
        scratch.remove()
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return False, f"bubblewrap could not start a sandbox here: {said}"
    return True, version.strip() or "bubblewrap"


def start(scratch: Scratch, notebook: Path, chapter_id: str, limits: Limits, isolate: bool,
          data: str | None = None) -> subprocess.Popen:
    """Start the runner on ``notebook`` (a file under ``scratch.work``); the caller sends the
    request on its stdin, reads one JSON line from its stdout and calls :func:`stop`."""
    inside = (lambda p: scratch.inside(p)) if isolate else str
    runner = [sys.executable, "-m", "tlcourse.grading.runner",
              "--notebook", inside(notebook), "--out", inside(scratch.out),
              "--chapter", chapter_id, "--cell-timeout", repr(limits.cell_timeout),
              "--total-timeout", repr(limits.total_timeout),
              "--collect-timeout", repr(limits.collect_timeout),
              "--memory", str(limits.memory), "--nproc", str(limits.nproc),
              "--fsize", str(limits.fsize), "--cpu", str(limits.cpu_seconds)]
    if isolate:
        if scratch.uid is not None:
            runner += ["--uid", str(scratch.uid), "--gid", str(scratch.uid)]
        argv, env, cwd = _bwrap_argv(scratch, data) + ["--"] + runner, {"PATH": os.defpath}, None
    else:  # the same scrubbed environment, with host paths for the scratch folder
        env = {k: v.replace(MOUNT, str(scratch.root)) for k, v in
               _environment(scratch, data).items()}
        argv, cwd = runner, scratch.work
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Kill the sandbox's whole process group (its PID namespace dies with it)."""
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass

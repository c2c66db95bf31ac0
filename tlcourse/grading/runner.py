"""Inside the sandbox: run a submitted notebook cell by cell and collect each question's answer.

``python -m tlcourse.grading.runner --notebook NB --out DIR --chapter T01 ...`` is what
:mod:`tlcourse.grading.sandbox` starts inside bubblewrap. It judges nothing. It

1. sets the resource limits (data segment, CPU seconds, processes, file size, no core dumps),
   switches to an unprivileged user when started as root, and makes itself non-dumpable, so that
   the student's code (which runs as the same user) cannot read its memory or file descriptors;
2. reads the grading request from standard input: for each question, the secret seeds of its
   collections (the trusted parent draws them; the notebook never sees a seed before its
   collection runs);
3. starts a Jupyter kernel and runs the student's cells one at a time, each under the cell limit
   and all of them under the total limit; a cell that ignores the interrupt is killed with the
   kernel, and the cells after it are reported as never run;
4. after every cell that calls ``grader.check("qN")`` (or ``check_all``), and once at the end, runs
   a collection cell of its own: each question's ``collect(namespace, seed)`` under its own time
   limit, the answer written as plain data (:mod:`tlcourse.grading.plain`) to
   ``DIR/<question>-<k>.json``, or ``{"error": ...}`` with what went wrong;
5. prints one JSON line on its standard output, which only the trusted parent reads: the notes
   (what happened, in words) and which collections ran. The kernel's output goes to a file, not
   to that pipe.

The trusted parent grades whatever answers exist, so a dead kernel or an endless cell loses only
the questions it touches.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["collect_into", "collection_points", "main"]

GRACE_S = 5.0  # after an interrupt, how long a cell has to stop before the kernel is killed
_CHECK = re.compile(r"""\.check\(\s*(?:question\s*=\s*)?["']([A-Za-z0-9_]+)["']""")
_CHECK_ALL = re.compile(r"\.check_all\(")


# ---------------------------------------------------------------- inside the kernel
def collect_into(namespace: dict, chapter_id: str, seeds: dict, out: str, seconds: float) -> None:
    """Run each question's ``collect`` on ``namespace``; write ``out/<q>-<k>.json``.

    ``seeds`` maps a question name to ``[k, seed]``. Called by the collection cells that the
    runner executes in the student's kernel; nothing a student's code raises escapes it.
    """
    from . import plain
    from .questions import describe_exception, load_questions, time_limited

    questions = {q.name: q for q in load_questions(chapter_id)}
    for name, (k, seed) in seeds.items():
        question, stem = questions[name], Path(out) / f"{name}-{int(k)}"
        missing = [n for n in question.names if n not in namespace]
        if missing:
            record = {"error": f"define {', '.join(f'`{n}`' for n in missing)} first (run the "
                               f"cell that computes it)"}
        else:
            answer, message = time_limited(
                lambda: plain.to_plain(question.collect(namespace, int(seed))), seconds)
            record = {"error": message} if message else {"answer": answer}
        try:
            plain.dump(stem, record)
        except BaseException as exc:  # too large for the file-size limit, a full disk, ...
            try:
                plain.dump(stem, {"error": f"the answer could not be saved for grading "
                                           f"({describe_exception(exc, 200)})"})
            except BaseException:
                pass


# ---------------------------------------------------------------- which cells trigger collection
def collection_points(cells: list, question_names: list[str], per_question: int = 8) -> list:
    """``[(cell_index, [question, ...]), ...]``: after which code cells to collect what.

    A cell calling ``.check("q2")`` triggers q2, ``.check_all(`` triggers every question; at most
    ``per_question`` collections per question (the last ones), plus the final one after the run.
    """
    points, counts = [], dict.fromkeys(question_names, 0)
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        names = set(question_names) if _CHECK_ALL.search(source) else {
            n for n in _CHECK.findall(source) if n in counts}
        if names:
            points.append((index, sorted(names)))
    kept = []
    for index, names in reversed(points):  # keep the latest collections of each question
        names = [n for n in names if counts[n] < per_question]
        for n in names:
            counts[n] += 1
        if names:
            kept.append((index, names))
    return list(reversed(kept))


# ---------------------------------------------------------------- limits and privileges
def _set_limits(memory: int, nproc: int, fsize: int, cpu: int) -> None:
    for which, value in ((resource.RLIMIT_DATA, memory), (resource.RLIMIT_FSIZE, fsize),
                         (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NPROC, nproc)):
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: a too-large write fails, not kills


def _drop_privileges(uid: int | None, gid: int | None) -> None:
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)  # all uids non-zero: the capabilities are gone too
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("tlcourse runner: could not switch to an unprivileged user")
    try:  # PR_SET_DUMPABLE = 4: no ptrace, no /proc/<pid>/mem or fd/ for the same user
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- the kernel
class _Kernel:
    def __init__(self, workdir: Path, log_path: Path, start_timeout: float):
        from jupyter_client.manager import KernelManager

        self.log = open(log_path, "wb")
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(workdir), stdin=subprocess.DEVNULL, stdout=self.log,
                             stderr=self.log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=start_timeout)

    def alive(self) -> bool:
        try:
            return self.km.is_alive()
        except Exception:
            return False

    def exit_status(self) -> int | None:
        process = getattr(self.km.provisioner, "process", None)
        return None if process is None else process.poll()

    def run(self, code: str, limit: float) -> tuple[str, list[tuple[str, str]], float]:
        """``(state, errors, seconds)``; state is ``ok``, ``timeout`` or ``died``."""
        start = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        return self._wait(msg_id, start, start + limit)

    def _wait(self, msg_id: str, start: float, deadline: float):
        errors, checked = [], 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout", errors, now - start
            if now - checked > 0.5:
                checked = now
                if not self.alive():
                    return "died", errors, now - start
            try:
                msg = self.kc.get_iopub_msg(timeout=min(0.5, deadline - now))
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content", {})
            if kind == "error" and len(errors) < 5:
                errors.append((str(content.get("ename", ""))[:100],
                               str(content.get("evalue", ""))[:300]))
            elif kind == "status" and content.get("execution_state") == "idle":
                return "ok", errors, time.monotonic() - start

    def stop(self, msg_errors: list) -> bool:
        """Interrupt the running cell; True if it stopped within the grace period."""
        try:
            self.km.interrupt_kernel()
        except Exception:
            return False
        # the interrupted execution's idle status: wait for it under the grace period
        start = time.monotonic()
        while time.monotonic() - start < GRACE_S:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                if not self.alive():
                    return False
                continue
            if msg.get("msg_type") == "status" and (
                    msg.get("content", {}).get("execution_state") == "idle"):
                return True
        return False

    def kill(self) -> None:
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        except Exception:
            process = getattr(self.km.provisioner, "process", None)
            if process is not None:
                process.kill()


def _died_note(kernel: _Kernel, where: str, memory_gib: float) -> str:
    status = kernel.exit_status()
    if status is None:
        how = "the kernel stopped responding"
    elif status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        how = f"the kernel was killed by {name}"
        if -status == signal.SIGKILL:
            how += f" (out of memory? the memory limit is {memory_gib:g} GiB)"
        elif -status == signal.SIGXCPU:
            how += " (the CPU-time limit)"
    else:
        how = f"the kernel exited with status {status}"
    return f"{where}: {how}"


def _error_note(where: str, errors: list, memory_gib: float) -> list[str]:
    notes = []
    for ename, evalue in errors:
        text = f"{where} raised {ename}" + (f": {evalue}" if evalue else "")
        if ename == "MemoryError" or "can't allocate memory" in evalue:
            text += f" (out of memory: the limit is {memory_gib:g} GiB)"
        notes.append(" ".join(text.split())[:400])
    return notes


def _cells_range(first: int, last: int) -> str:
    return f"cell {first}" if first == last else f"cells {first}-{last}"


def run_notebook(args, request: dict) -> dict:
    import nbformat

    nb = nbformat.read(args.notebook, as_version=4)
    cells = nb.cells
    seeds = request["seeds"]  # {question: [seed_0, seed_1, ...]}; the last one is the final one
    names = list(seeds)
    points = dict(collection_points(cells, names, per_question=max(
        [len(s) - 1 for s in seeds.values()] or [0])))
    used = dict.fromkeys(names, 0)
    notes: list[str] = []
    collected: list[list] = []
    memory_gib = args.memory / 2**30
    start = time.monotonic()
    deadline = start + args.total_timeout
    out = str(args.out)

    def collect(kernel, which: list[str], where: str, final: bool = False) -> bool:
        request_seeds = {}
        for name in which:
            k = len(seeds[name]) - 1 if final else used[name]
            if not final and k >= len(seeds[name]) - 1:
                continue
            used[name] += 0 if final else 1
            request_seeds[name] = [k, seeds[name][k]]
        if not request_seeds:
            return True
        code = (f"__import__('tlcourse.grading.runner', fromlist=['collect_into']).collect_into("
                f"globals(), {args.chapter!r}, {json.dumps(request_seeds)}, {out!r}, "
                f"{args.collect_timeout!r})")
        limit = args.collect_timeout * len(request_seeds) + 10
        state, _, _ = kernel.run(code, limit)
        if state == "ok":
            collected.extend([n, k] for n, (k, _) in request_seeds.items())
            return True
        if state == "timeout" and kernel.stop([]):
            notes.append(f"the grader's collection {where} was stopped after {limit:g} s")
            collected.extend([n, k] for n, (k, _) in request_seeds.items())
            return True
        notes.append(_died_note(kernel, f"the grader's collection {where}", memory_gib)
                     if state == "died" else f"the grader's collection {where} did not stop; "
                     f"the kernel was killed")
        return False

    try:
        kernel = _Kernel(Path(args.notebook).parent, Path(args.out).parent / "kernel.log",
                         start_timeout=min(120.0, args.total_timeout))
    except Exception as exc:
        return {"notes": [f"the kernel could not start ({type(exc).__name__}: {exc})"[:400]],
                "collected": [], "seconds": time.monotonic() - start}
    alive = True
    code_cells = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    for position, index in enumerate(code_cells):
        cell, number = cells[index], index + 1
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            notes.append(f"{_cells_range(number, len(cells))} never ran: the notebook reached "
                         f"the total limit of {args.total_timeout:g} s")
            break
        limit = min(args.cell_timeout, remaining)
        which_limit = "cell limit" if limit == args.cell_timeout else "total limit"
        state, errors, seconds = kernel.run(cell.source, limit)
        notes += _error_note(f"cell {number}", errors, memory_gib)
        if state == "timeout":
            if kernel.stop(errors):
                notes.append(f"cell {number} was stopped after {limit:.0f} s (the {which_limit})")
            else:
                later = code_cells[position + 1:]
                notes.append(f"cell {number} ran past the {which_limit} ({limit:.0f} s) and did "
                             f"not stop when interrupted: the kernel was killed")
                if later:
                    notes.append(f"{_cells_range(later[0] + 1, len(cells))} never ran: an "
                                 f"earlier cell did not stop")
                alive = False
                break
        elif state == "died":
            notes.append(_died_note(kernel, f"cell {number}", memory_gib))
            later = code_cells[position + 1:]
            if later:
                notes.append(f"{_cells_range(later[0] + 1, len(cells))} never ran: the kernel "
                             f"died in cell {number}")
            alive = False
            break
        if index in points and not collect(kernel, points[index], f"after cell {number}"):
            alive = False
            break
    if alive:
        alive = collect(kernel, names, "at the end", final=True)
    kernel.kill()
    return {"notes": notes, "collected": collected, "seconds": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlcourse.grading.runner")
    parser.add_argument("--notebook", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chapter", required=True)
    parser.add_argument("--cell-timeout", type=float, default=60)
    parser.add_argument("--total-timeout", type=float, default=300)
    parser.add_argument("--collect-timeout", type=float, default=30)
    parser.add_argument("--memory", type=int, default=4 * 2**30)
    parser.add_argument("--nproc", type=int, default=512)
    parser.add_argument("--fsize", type=int, default=512 * 2**20)
    parser.add_argument("--cpu", type=int, default=900)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    args = parser.parse_args(argv)
    _set_limits(args.memory, args.nproc, args.fsize, args.cpu)
    _drop_privileges(args.uid, args.gid)
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    result_pipe = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)  # nothing else may write to the result pipe
    os.dup2(devnull, 1)
    try:
        result = run_notebook(args, request)
    except Exception as exc:
        result = {"notes": [f"the grader could not run the notebook ({type(exc).__name__}: "
                            f"{exc})"[:400]], "collected": []}
    result_pipe.write(json.dumps(result) + "\n")
    result_pipe.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

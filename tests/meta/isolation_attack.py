"""Trusted test code standing in for a hostile exercise: what a worker's child can do to its host.

Run as ``python isolation_attack.py LIB MODE``: ``LIB`` is the directory that holds ``harness/``
(``/kata/lib`` in the sandbox), ``MODE`` is ``isolated`` (this process makes itself a host as
``worker/host.py`` does, and its child gives up its capabilities as an exercise's child does) or
``bare`` (neither: the control, where the same attempts should succeed). The child tries each way
of reaching the host and reports what it got; the host checks whether its memory changed. One
line of JSON on stdout: ``{"attempt": "ok" or the errno's name, ..., "host_memory_changed": bool}``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
from harness.worker import host  # noqa: E402

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
ORIGINAL, FORGED = b"refusals-on", b"refusals-no"


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def attempts(target: int, address: int) -> dict[str, str]:
    """Each way of reaching process ``target``, and what it got; ``address`` is where ``target``
    holds ``ORIGINAL`` (the same address in this forked copy)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, str] = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as e:
            out[name] = _errno_name(e.errno)

    def checked(result):
        if result == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def write_mem():
        with open(f"/proc/{target}/mem", "r+b", buffering=0) as f:
            f.seek(address)
            f.write(FORGED)

    def read(name):
        return lambda: open(f"/proc/{target}/{name}", "rb").read()

    def ptrace():
        checked(libc.ptrace(PTRACE_ATTACH, target, None, None))
        os.waitpid(target, 0x40000000)  # __WALL: the stop that the attach caused
        libc.ptrace(PTRACE_DETACH, target, None, None)

    def vm_write():
        local = ctypes.create_string_buffer(FORGED)
        left, right = IoVec(ctypes.addressof(local), len(FORGED)), IoVec(address, len(FORGED))
        checked(libc.process_vm_writev(target, ctypes.byref(left), 1, ctypes.byref(right), 1, 0))

    attempt("proc_mem_write", write_mem)
    attempt("ptrace_attach", ptrace)
    attempt("process_vm_writev", vm_write)
    attempt("read_environ", read("environ"))
    attempt("read_maps", read("maps"))
    attempt("signal", lambda: os.kill(target, 0))
    return out


def main() -> None:
    mode = sys.argv[2]
    secret = ctypes.create_string_buffer(ORIGINAL)
    if mode == "isolated":
        host.isolate_host()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        report = {"capabilities_left": host.isolate_child() if mode == "isolated" else []}
        report.update(attempts(os.getppid(), ctypes.addressof(secret)))
        os.write(writer, json.dumps(report).encode())
        os._exit(0)
    os.close(writer)
    data = b""
    while chunk := os.read(reader, 65536):
        data += chunk
    os.waitpid(pid, 0)
    report = json.loads(data)
    report["host_memory_changed"] = secret.raw[:len(ORIGINAL)] != ORIGINAL
    print(json.dumps(report))


if __name__ == "__main__":
    main()

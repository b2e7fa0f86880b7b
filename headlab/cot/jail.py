"""The child side of the plan-mode sandbox: run as `python -I jail.py MODE CPU MEMORY FILE_SIZE` in a folder
holding prog.py. Standard library only, since it runs before anything else in a fresh interpreter.

MODE `os` puts the program behind the operating system's isolation before a line of it is read:
- new user, mount, PID, network, IPC, UTS and cgroup namespaces (the program is root of a namespace that owns
  nothing outside it; it sees no host process, so it cannot signal one; its network has only a down loopback);
- an empty root (tmpfs) holding read-only binds of the system's library folders and this Python, and a small
  tmpfs /sandbox holding a copy of prog.py: no /etc, no /proc, no /home, no host folder to write;
- every capability dropped (bounding set too) and no_new_privs;
- Landlock, where the kernel has it: writes only beneath /sandbox, and no signals out of the sandbox;
- seccomp, where the architecture is known: no new processes, no exec, no sockets, no mount, namespace,
  ptrace, BPF, keyring or module calls;
- rlimits on CPU, address space, file size and open files; an init process that dies with the parent (a
  timeout's kill), taking every process of the namespace with it.
MODE `guard` (the user's `--unsafe-exec`, for machines without namespaces) keeps only the rlimits and the
in-process audit hook, which a program written to escape can switch off.

Both modes then install the audit hook (the friendly first refusal: status "blocked" with a reason) and run the
program. A failure to set up the isolation is one line "isolation: ..." on stderr and exit status 125.
"""

import ctypes
import os
import resource
import select
import signal
import struct
import sys

SETUP_FAILED = 125
WORK = "/sandbox"  # the program's folder in its root; no Python prefix lives there

CLONE_THREAD = 0x00010000
NAMESPACES = {"mount": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
              "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 22, 24, 38, 47

# The system calls numbered alike on every architecture since Linux 5.1.
UNIFIED = {"pidfd_send_signal": 424, "io_uring_setup": 425, "open_tree": 428, "move_mount": 429, "fsopen": 430,
           "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "mount_setattr": 442}
# System calls by architecture (from the kernel's unistd tables): those seccomp refuses, and clone, which is
# allowed only for threads. x32 numbers (bit 30) are refused as a block on x86_64.
ARCHES = {
    "x86_64": {"audit": 0xC000003E, "pivot_root": 155, "clone": 56, "clone3": 435, "refuse": {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "ptrace": 101, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
        "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "process_vm_readv": 310, "process_vm_writev": 311, "socket": 41, "socketpair": 53,
        **UNIFIED}},
    "aarch64": {"audit": 0xC00000B7, "pivot_root": 41, "clone": 220, "clone3": 435, "refuse": {
        "execve": 221, "execveat": 281, "ptrace": 117, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241, "keyctl": 219,
        "add_key": 217, "request_key": 218, "userfaultfd": 282, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "process_vm_readv": 270,
        "process_vm_writev": 271, "socket": 198, "socketpair": 199,
        **UNIFIED}},
}
LANDLOCK_CREATE, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT = 444, 445, 446

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    pass


def check(result: int, step: str) -> int:
    if result < 0:
        raise SetupError(f"{step}: {os.strerror(ctypes.get_errno())}")
    return result


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def encoded(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None, step: str) -> None:
    check(libc.mount(encoded(source), encoded(target), encoded(fstype), ctypes.c_ulong(flags), encoded(data)), step)


def enter_namespaces() -> None:
    uid, gid = os.geteuid(), os.getegid()
    check(libc.unshare(sum(NAMESPACES.values())), "unshare of user, mount, PID and network namespaces")
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"0 {uid} 1\n")
    write("/proc/self/gid_map", f"0 {gid} 1\n")


def locked_flags(path: str) -> int:
    """A bind's remount must repeat the flags its source mount carries (the kernel locks them in a namespace)."""
    f = os.statvfs(path).f_flag
    pairs = ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
             (getattr(os, "ST_RELATIME", 4096), MS_RELATIME))
    return sum(ms for st, ms in pairs if f & st)


def bind(root: str, path: str, readonly: bool = True) -> None:
    target = root + path
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND, None, f"bind {path}")
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(path),
              None, f"read-only {path}")


def python_folders() -> list[str]:
    """This interpreter's folders (a venv's and its base's), without those inside another one."""
    found = sorted({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
                    if os.path.isdir(p)})
    return [p for p in found if not any(p.startswith(q + os.sep) for q in found if q != p)]


def build_root(root: str, program: bytes, work_bytes: int, arch: dict | None) -> None:
    """An empty tmpfs root with the system's libraries and this Python read-only, prog.py in /sandbox; pivot in."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None, "private mounts")
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755", "tmpfs root")
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), root + top)
        elif os.path.isdir(top):
            bind(root, top)
    for path in python_folders():
        if not path.startswith("/usr/"):
            bind(root, path)
    if os.path.isfile("/etc/ld.so.cache"):  # how the loader finds libraries in multiarch folders
        bind(root, "/etc/ld.so.cache")
    for dev in ("/dev/null", "/dev/zero", "/dev/urandom"):
        if os.path.exists(dev):
            bind(root, dev, readonly=False)
    os.makedirs(root + WORK)
    mount("tmpfs", root + WORK, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={work_bytes},nr_inodes=1024,mode=0700", "tmpfs /sandbox")
    with open(root + WORK + "/prog.py", "wb") as f:
        f.write(program)
    os.chdir(root)
    if arch is None:
        raise SetupError("pivot_root: unknown architecture")
    check(libc.syscall(arch["pivot_root"], b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None, "read-only root")
    os.chdir(WORK)


def drop_capabilities() -> None:
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check(libc.capset(header, bytes(24)), "drop capabilities")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def landlock(work: str) -> bool:
    """Writes only beneath `work` (and to /dev/null); with ABI 6, no signals to processes outside. False where the
    kernel has no Landlock."""
    abi = libc.syscall(LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    writes = sum(1 << b for b in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove and make-anything rights
    writes |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets, signals
    attr = struct.pack("QQQ", writes, 0, scoped) if abi >= 6 else struct.pack("Q", writes)
    ruleset = check(libc.syscall(LANDLOCK_CREATE, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)),
                    "landlock ruleset")
    file_writes = (1 << 1) | (1 << 14 if abi >= 3 else 0)  # the rights a rule on a single file may carry
    for path, rights in ((work, writes), ("/dev/null", file_writes)):
        if os.path.exists(path):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            rule = struct.pack("=Qi", rights, fd)
            check(libc.syscall(LANDLOCK_ADD_RULE, ruleset, 1, rule, 0), f"landlock rule {path}")
            os.close(fd)
    check(libc.syscall(LANDLOCK_RESTRICT, ruleset, 0), "landlock restrict")
    os.close(ruleset)
    return True


def seccomp_filter(arch: dict) -> bytes:
    """A classic-BPF program: refuse the listed calls with EPERM, clone3 with ENOSYS (so that threads fall back to
    clone), and clone unless it makes a thread in this process's namespaces; any other architecture is killed."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    prog = [op(ld, 4), op(jeq, arch["audit"], 1, 0), op(ret, kill), op(ld, 0),
            op(jge, 0x40000000, 0, 1), op(ret, eperm), op(jeq, arch["clone3"], 0, 1), op(ret, enosys)]
    for nr in sorted(set(arch["refuse"].values())):
        prog += [op(jeq, nr, 0, 1), op(ret, eperm)]
    namespaces = sum(NAMESPACES.values())
    prog += [op(jeq, arch["clone"], 0, 5), op(ld, 16), op(jset, CLONE_THREAD, 0, 2), op(jset, namespaces, 1, 0),
             op(ret, allow), op(ret, eperm), op(ret, allow)]
    return b"".join(prog)


def install_seccomp(arch: dict | None) -> bool:
    if arch is None:
        return False
    program = seccomp_filter(arch)
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(filters))
    check(libc.prctl(PR_SET_SECCOMP, 2, ctypes.c_char_p(fprog), 0, 0), "seccomp")
    return True


def set_limits(cpu: int, memory: int, file_size: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def isolate(limits: tuple[int, int, int]) -> None:
    """Returns in the program's process (PID 2 of the new namespace), fully isolated; the two processes above
    it wait and pass its end on."""
    arch = ARCHES.get(os.uname().machine)
    program = open("prog.py", "rb").read()
    root = os.path.abspath("root")
    enter_namespaces()
    status_r, status_w = os.pipe()
    alive_r, alive_w = os.pipe()  # the launcher holds alive_w: EOF on alive_r means it has died
    init = os.fork()
    if init:
        os.close(status_w), os.close(alive_r)
        relay_end(init, status_r)
    os.close(status_r), os.close(alive_w)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([alive_r], [], [], 0)[0]:  # the launcher died before PDEATHSIG was armed
        os._exit(SETUP_FAILED)
    build_root(root, program, max(4 * limits[2], 16 << 20), arch)
    child = os.fork()
    if child:  # init of the namespace: wait, then tell the launcher how the program ended
        os.close(alive_r)
        _, status = os.waitpid(child, 0)
        os.write(status_w, str(status).encode())
        os._exit(0)
    os.closerange(3, 1 << 16)
    drop_capabilities()
    set_limits(*limits)
    landlock(WORK)
    install_seccomp(arch)


def relay_end(init: int, status_r: int) -> None:
    """In the launcher: end as the program ended (its exit status, or the signal that killed it)."""
    os.waitpid(init, 0)
    text = os.read(status_r, 64)
    if not text:
        os._exit(SETUP_FAILED)
    status = int(text)
    if os.WIFSIGNALED(status):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else SETUP_FAILED)


BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "winreg.", "webbrowser.", "urllib.Request",
           "resource.setrlimit", "resource.prlimit")  # root could raise its own hard limits
PATH_EVENTS = {"os.remove": 1, "os.rename": 2, "os.rmdir": 1, "os.mkdir": 1, "os.symlink": 2, "os.link": 2,
               "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1,
               "shutil.copyfile": 2, "shutil.move": 2, "os.chdir": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def audit_guard(root: str):
    """The in-process first refusal: a clear "sandbox: ..." for the common accident (a socket, a subprocess, a
    write outside the folder). Not a boundary: the program can reach this function's state."""
    def inside(path) -> bool:
        if isinstance(path, int):
            return True
        full = os.path.realpath(os.fsdecode(path))
        return full == root or full.startswith(root + os.sep)

    def guard(event, args):
        if event.startswith(BLOCKED):
            raise PermissionError(f"sandbox: {event} is not allowed (no network, no processes)")
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
            if writes and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the sandbox folder is not allowed")
        elif event in PATH_EVENTS:
            for path in args[:PATH_EVENTS[event]]:
                if path is not None and not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} outside the sandbox folder is not allowed")
    return guard


def main() -> None:
    mode, *numbers = sys.argv[1:5]
    limits = tuple(int(n) for n in numbers)
    if mode == "os":
        try:
            isolate(limits)
        except (SetupError, OSError) as e:
            print(f"isolation: {e}", file=sys.stderr)
            os._exit(SETUP_FAILED)
    else:
        set_limits(*limits)
    os.environ.clear()
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", LC_ALL="C.UTF-8")
    source = open("prog.py", encoding="utf-8").read()
    for name in ("numpy", "sympy"):  # they load C libraries through ctypes, which the hook refuses: import first
        if name in source:
            try:
                __import__(name)
            except ImportError:
                pass
    sys.addaudithook(audit_guard(os.path.realpath(os.getcwd())))
    code = compile(source, "program.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()

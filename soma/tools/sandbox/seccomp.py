"""A seccomp filter for bubblewrap's `--seccomp`: the kernel interfaces a sandboxed program has
no use for and that widen its reach (namespaces, mounts, tracing, eBPF, keyrings, io_uring)."""

from __future__ import annotations

import errno
import platform
import struct

# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
_LD_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_NR, _ARCH, _ARG0 = 0, 4, 16
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_X32_BIT = 0x40000000

_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)


def _table(text: str) -> dict[str, int]:
    words = text.split()
    return {name: int(number) for name, number in zip(words[::2], words[1::2], strict=True)}


# Syscall numbers from the kernel's unistd headers; every name but clone/clone3 is denied.
_TABLES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        _table(
            """
            clone 56 clone3 435 ptrace 101 syslog 103 pivot_root 155 chroot 161 acct 163
            mount 165 umount2 166 swapon 167 swapoff 168 reboot 169 sethostname 170
            setdomainname 171 init_module 175 delete_module 176 quotactl 179
            lookup_dcookie 212 kexec_load 246 add_key 248 request_key 249 keyctl 250
            unshare 272 perf_event_open 298 fanotify_init 300 name_to_handle_at 303
            open_by_handle_at 304 setns 308 process_vm_readv 310 process_vm_writev 311
            finit_module 313 kexec_file_load 320 bpf 321 userfaultfd 323 io_uring_setup 425
            io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430
            fsconfig 431 fsmount 432 fspick 433 mount_setattr 442
            """
        ),
    ),
    "aarch64": (
        0xC00000B7,
        _table(
            """
            clone 220 clone3 435 ptrace 117 syslog 116 pivot_root 41 chroot 51 acct 89
            mount 40 umount2 39 swapon 224 swapoff 225 reboot 142 sethostname 161
            setdomainname 162 init_module 105 delete_module 106 quotactl 60
            lookup_dcookie 18 kexec_load 104 add_key 217 request_key 218 keyctl 219
            unshare 97 perf_event_open 241 fanotify_init 262 name_to_handle_at 264
            open_by_handle_at 265 setns 268 process_vm_readv 270 process_vm_writev 271
            finit_module 273 kexec_file_load 294 bpf 280 userfaultfd 282 io_uring_setup 425
            io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430
            fsconfig 431 fsmount 432 fspick 433 mount_setattr 442
            """
        ),
    ),
}


def supported(machine: str | None = None) -> bool:
    return (machine or platform.machine()) in _TABLES


def filter_program(machine: str | None = None) -> bytes:
    """The compiled filter (struct sock_filter[]) for this machine's architecture.

    Denied calls fail with EPERM; clone with a namespace flag too; clone3 with ENOSYS, so
    libc falls back to clone, whose flags a classic filter can read. Other ABIs (x32, i386 on
    x86_64) get ENOSYS for everything.
    """
    name = machine or platform.machine()
    if name not in _TABLES:
        raise ValueError(f"no seccomp table for {name}")
    arch, numbers = _TABLES[name]
    code: list[tuple[int, int | str, int | str, int]] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 0, "nosys", arch),
        (_LD_ABS, 0, 0, _NR),
    ]
    if name == "x86_64":
        code.append((_JGE, "nosys", 0, _X32_BIT))
    code.append((_JEQ, "nosys", 0, numbers["clone3"]))
    denied = sorted(nr for call, nr in numbers.items() if call not in ("clone", "clone3"))
    code += [(_JEQ, "eperm", 0, nr) for nr in denied]
    code += [
        (_JEQ, 0, "allow", numbers["clone"]),
        (_LD_ABS, 0, 0, _ARG0),
        (_JSET, "eperm", "allow", _NAMESPACE_FLAGS),
    ]
    labels = {"allow": len(code), "eperm": len(code) + 1, "nosys": len(code) + 2}
    returns = [_ALLOW, _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS]
    out = bytearray()
    for index, (op, true, false, k) in enumerate(code):
        jt = labels[true] - index - 1 if isinstance(true, str) else true
        jf = labels[false] - index - 1 if isinstance(false, str) else false
        out += struct.pack("<HBBI", op, jt, jf, k)
    for value in returns:
        out += struct.pack("<HBBI", _RET, 0, 0, value)
    return bytes(out)

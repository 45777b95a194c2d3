#!/usr/bin/env python3
"""Build the fuzz targets' seed corpus (fuzz/seeds/TARGET/) from ringside's
own guests and files: code windows of the built-in guests' kernels for the
guest-code targets, their ELF files for the loader, saved states of small
machines, the default configuration and the book's, an IDE session on the
demo's disk image, a gdb session, and device programming sequences.

usage: fuzz/make-seeds.py [RINGSIDE]   (default: target/release/ringside)

Deterministic: the same build gives the same seeds. Run from the
repository's root after `cargo build --release`.
"""
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGSIDE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/ringside")
SEEDS = os.path.join(ROOT, "fuzz/seeds")


def put(target, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def elf32_sections(image):
    """(name, type, addr, bytes) of an ELF32 file's sections."""
    if image[:4] != b"\x7fELF" or image[4] != 1:
        return []
    shoff, = struct.unpack_from("<I", image, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x2E)
    heads = [struct.unpack_from("<IIIIIIIIII", image, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx]
    out = []
    for h in heads:
        name_off, typ, _flags, addr, off, size = h[:6]
        start = strtab[4] + name_off
        name = image[start:image.index(b"\0", start)].decode()
        out.append((name, typ, addr, image[off:off + size] if typ != 8 else b""))
    return out


def guest_case(mode, code, data=b"", regs=None, flags=0x202):
    regs = regs or [0x1234, 0x10, 0x2000, 0x100, 0x7000, 0x7000, 0x2010, 0x2020]
    out = bytes([mode]) + struct.pack("<8I", *regs) + struct.pack("<I", flags)
    out += bytes([len(code) - 1]) + code + data
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([RINGSIDE, "guests", "--export", tmp], check=True, stdout=subprocess.DEVNULL)
        kernels = sorted(f for f in os.listdir(tmp) if f.endswith(".elf"))
        # The guest-code targets: 128-byte windows of every kernel's code,
        # in each mode (16-bit windows from the real-mode parts are just
        # bytes there: the fuzzer mutates them anyway).
        for k in kernels:
            image = open(os.path.join(tmp, k), "rb").read()
            text = b"".join(b for (n, t, _a, b) in elf32_sections(image) if n.startswith(".text"))
            for i, at in enumerate(range(0, min(len(text), 4 * 512), 512)):
                code = text[at:at + 128]
                if len(code) < 8:
                    continue
                for target in ("guest_interp", "guest_jit", "guest_raw", "diff_interp_jit", "diff_interp_raw"):
                    put(target, guest_case((i + len(k)) % 5, code, data=bytes(range(64))))
            # The loader: the kernel itself (the small ones), with a flag
            # combination each.
            if len(image) <= 48 * 1024:
                put("multiboot_elf", bytes([len(k) % 4]) + image)
        # Saved states of small machines (2 MiB: the target restores only
        # machines of 16 MiB or less): the payload behind the header,
        # after a 0 (the target frames it).
        for guest, at in (("hello", 2000), ("exceptions", 20000), ("paging", 20000)):
            state = os.path.join(tmp, guest + ".state")
            subprocess.run(
                [RINGSIDE, "run", "builtin:" + guest, "--mem", "2", "--clock", "fast",
                 "--save-state-at", str(at), state],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if os.path.exists(state):
                data = open(state, "rb").read()
                put("saved_state", b"\0" + data[29:])
                put("saved_state", b"\1" + data)
        # Configurations: the default, and keys set on it.
        default = subprocess.run([RINGSIDE, "config", "--print-default"], capture_output=True).stdout
        if default:
            put("config_toml", default)
            put("config_toml", default + b"\n--set\njit.threshold=1\ncpu.vendor=AuthenticAMD\ndevices.com1.irq=3\n")
        put("config_toml", b"[machine]\nmemory_mib = 2\nengine = \"jit\"\n[clock]\nns_per_instruction = 1\nmode = \"fast\"\n[devices]\n")
        # IDE: IDENTIFY, READ SECTORS (LBA 0, 1 sector) and 256 data reads,
        # WRITE SECTORS, then the demo disk's first sectors as the image.
        disk = os.path.join(tmp, "demo-disk.img")
        image = open(disk, "rb").read()[:4096] if os.path.exists(disk) else bytes(1024)
        def w(reg, v):
            return bytes([0xA0 | reg, v, 0, 0])
        ops = w(6, 0xE0) + w(7, 0xEC) + bytes([0x00, 0xFF, 0, 0])
        ops += w(2, 1) + w(3, 0) + w(4, 0) + w(5, 0) + w(6, 0xE0) + w(7, 0x20) + bytes([0x00, 0xFF, 0, 0])
        ops += w(2, 1) + w(7, 0x30) + bytes([0x40, 0xFF, 0x55, 0xAA]) + bytes([0x67, 0, 0, 0])
        put("ide_disk", bytes([len(ops) // 4]) + ops + image)
        # The devices: PIC initialisation, PIT channel 0, the UART, CMOS,
        # an APIC register write and time passing.
        def port_write(idx, v, size=0):
            return bytes([2 | size << 6, idx]) + struct.pack("<I", v)
        seq = port_write(0, 0x11) + port_write(1, 0x20) + port_write(1, 0x04) + port_write(1, 0x01)
        seq += port_write(7, 0x34) + port_write(4, 0xA9) + port_write(4, 0x04)
        seq += port_write(18, 0x80) + port_write(15, 0x01) + port_write(18, 0x03) + port_write(15, ord("A"))
        seq += port_write(13, 0x0B) + bytes([0, 14, 0, 0, 0, 0])
        seq += bytes([5 | 2 << 6, 0x0F]) + struct.pack("<I", 0x1FF)
        seq += bytes([6, 0]) + struct.pack("<I", 5_000_000) + bytes([7, 0, 0, 0, 0, 0])
        put("device_bus", seq)
        # A gdb session: handshake, registers, memory, a breakpoint, a
        # step, continue (until the bytes run out).
        def packet(s):
            return b"$" + s + b"#" + b"%02x" % (sum(s) & 0xFF)
        session = [b"qSupported:multiprocess+;swbreak+;hwbreak+", b"?", b"g", b"m0,10", b"mfe000,8",
                   b"Z0,fe004,1", b"s", b"p8", b"P0=01000000", b"qRcmd,7265677300", b"z0,fe004,1", b"c"]
        put("gdb_packets", b"+".join(packet(p) for p in session) + b"+")
        put("gdb_packets", packet(session[0]) + b"+" + packet(b"D"))


main()

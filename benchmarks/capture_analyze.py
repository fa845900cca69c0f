"""Time and peak memory of `bmsgate capture analyze --json` on generated btsnoop captures of JBD traffic.

Each capture is a phone app polling a JBD BMS (basic info + cell voltages, the replies split into
20-byte notifications), repeated until the file has the wanted size; a last case is a valid btsnoop
header followed by 200 MB of zeros, which must be refused at once. Every run is a fresh process whose
peak RSS is read through a wrapper process, so one run's peak never hides in another's.

Run: .venv/bin/python benchmarks/capture_analyze.py [SIZE_MB ...]   (default: 4 20)
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_EPOCH_DELTA_US = 0x00DCDDB30F2F8000
_HANDLE, _NOTIFY, _WRITE = 0x0040, 0x0011, 0x0015
_BASIC = bytes.fromhex("DD03001F19DFF8240DA50FA00002249100000000000012570311040B980BA90B960B97F89A77")
_CELLS = bytes.fromhex("DD0400220EC80EC80ECB0ECF0ECA0EC70ECA0ECD0EC90ECA0ECB0ECB0EC80ECC0EC80EC90EC9F18777")
_REQUESTS = ((bytes.fromhex("DDA50300FFFD77"), _BASIC), (bytes.fromhex("DDA50400FFFC77"), _CELLS))

_MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    began = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", "bmsgate", "capture", "analyze", "--json", sys.argv[1]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )
    print(json.dumps({
        "seconds": time.perf_counter() - began,
        "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "code": child.returncode,
        "stderr": child.stderr.strip(),
    }))
    """
)


def _record(timestamp: float, received: bool, packet: bytes) -> bytes:
    flags = int(received) | (0x02 if packet[0] in (0x01, 0x04) else 0)
    micros = round(timestamp * 1e6) + _EPOCH_DELTA_US
    return struct.pack(">IIIIq", len(packet), len(packet), flags, 0, micros) + packet


def _att(opcode: int, handle: int, value: bytes) -> bytes:
    pdu = bytes((opcode,)) + struct.pack("<H", handle) + value
    l2cap = struct.pack("<HH", len(pdu), 0x0004) + pdu
    return b"\x02" + struct.pack("<HH", _HANDLE | 0b10 << 12, len(l2cap)) + l2cap


def write_capture(path: Path, size: int) -> None:
    """A btsnoop (H4) capture of at least `size` bytes: a connection, a CCCD write, then polls."""
    connect = struct.pack("<BBHBB", 0x01, 0, _HANDLE, 1, 0) + bytes.fromhex("CCBBAA37C1A4")
    connect += struct.pack("<HHHB", 24, 0, 72, 0)
    t = 1_700_000_000.0
    with path.open("wb") as out:
        written = out.write(b"btsnoop\x00" + struct.pack(">II", 1, 1002))
        written += out.write(_record(t - 1, True, b"\x04\x3e" + bytes((len(connect),)) + connect))
        written += out.write(_record(t - 0.5, False, _att(0x12, _NOTIFY + 1, b"\x01\x00")))
        while written < size:
            for request, reply in _REQUESTS:
                written += out.write(_record(t, False, _att(0x52, _WRITE, request)))
                for index in range(0, len(reply), 20):
                    t += 0.02
                    written += out.write(_record(t, True, _att(0x1B, _NOTIFY, reply[index : index + 20])))
                t += 0.2
            t += 1.0


def write_zeros(path: Path, size: int) -> None:
    """A valid btsnoop header and then `size` zero bytes (sparse: no disk space used)."""
    with path.open("wb") as out:
        out.write(b"btsnoop\x00" + struct.pack(">II", 1, 1002))
        out.truncate(16 + size)


def measure(path: Path) -> dict[str, object]:
    """Seconds, peak RSS (MB), exit code and stderr of one `capture analyze --json` run."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True)
    measured: dict[str, object] = json.loads(result.stdout)
    return measured


def main() -> None:
    sizes = [float(arg) for arg in sys.argv[1:]] or [4.0, 20.0]
    with tempfile.TemporaryDirectory() as folder:
        cases: list[tuple[str, Path]] = []
        for megabytes in sizes:
            path = Path(folder) / f"jbd-{megabytes:g}mb.log"
            write_capture(path, int(megabytes * 1_000_000))
            cases.append((f"{path.stat().st_size / 1e6:.1f} MB JBD capture", path))
        zeros = Path(folder) / "zeros.log"
        write_zeros(zeros, 200_000_000)
        cases.append(("200 MB of zeros after a btsnoop header", zeros))
        print(f"{'case':42} {'time':>9} {'peak RSS':>10}  exit")
        for label, path in cases:
            measured = measure(path)
            print(f"{label:42} {measured['seconds']:8.2f}s {measured['rss_mb']:7.0f} MB  {measured['code']}")
            if measured["code"] != 0:
                print(f"{'':42} {measured['stderr']}")


if __name__ == "__main__":
    main()

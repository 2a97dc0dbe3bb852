"""The data dir on a small filesystem made by the test (tmpfs with a size, else an ext4 loop device).

Below ``limits.min_free_disk_mb`` stores are answered 0xA700 and nothing is corrupted; when space returns
the node stores again. With no floor, a disk that really fills makes the write fail: 0xA700, no temp file,
and the node goes on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from node.store import free_mb
from node.synth.phantom import make_phantom
from tests.faults import (
    SUCCESS,
    acked_problems,
    files_without_index,
    index_rows,
    index_without_file,
    send_files,
    temp_files,
)
from tests.nodeproc import NodeProcess

pytestmark = [pytest.mark.slow]

OUT_OF_RESOURCES = 0xA700
SIZE_MB = 40

CONFIG = """
[limits]
min_free_disk_mb = {floor}
[analysis]
models = []
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
"""


def _run(*args: str) -> str:
    """Run a command; return why it failed ("" when it succeeded)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:  # the tool is missing
        return f"{args[0]}: {exc.strerror}"
    return "" if done.returncode == 0 else f"{' '.join(args)}: {(done.stderr or done.stdout).strip()}"


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_mb: int) -> Iterator[str]:
    """Mount a ``size_mb`` filesystem on ``mount_point``: tmpfs, else ext4 on a loop device; yields which.

    Fails under CI=true, skips elsewhere, when neither can be mounted (not root, no loop devices).
    """
    mount_point.mkdir(parents=True, exist_ok=True)
    why = _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mount_point))
    kind = "tmpfs"
    if why:
        image = mount_point.parent / f"{mount_point.name}.ext4"
        with image.open("wb") as out:
            out.truncate(size_mb * 1024 * 1024)
        loop = _run("mkfs.ext4", "-q", "-m", "0", "-F", str(image)) or _run(
            "mount", "-o", "loop", str(image), str(mount_point)
        )
        if loop:
            reason = f"cannot mount a small filesystem for the data dir: {why}; {loop}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        kind = "ext4 on a loop device"
    try:
        yield kind
    finally:
        if _run("umount", str(mount_point)):
            _run("umount", "-l", str(mount_point))


def fill(data_dir: Path, leave_mb: float) -> Path:
    """Write a filler file so that about ``leave_mb`` stays free under ``data_dir``; return it."""
    filler = data_dir / "filler.bin"
    size = int((free_mb(data_dir) - leave_mb) * 1024 * 1024)
    assert size > 0, f"only {free_mb(data_dir):.1f} MB free"
    with filler.open("wb") as out:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            out.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return filler


def consistent(data_dir: Path, acked: dict[str, str]) -> list[str]:
    """Problems: acknowledged instances unsafe, index rows without files, files without rows, temp files."""
    problems = acked_problems(data_dir, acked, deep=acked)
    problems += [f"{sop}: index row without its spool file" for sop in index_without_file(data_dir)]
    problems += [f"{rel}: spool file without an index row" for rel in files_without_index(data_dir)]
    problems += [f"{p.name}: temp file left in spool/.tmp" for p in temp_files(data_dir)]
    return problems


def series(tmp_path: Path, seed: int, slices: int) -> tuple[list[Path], dict[Path, str], str]:
    folder = tmp_path / f"ct{seed}"
    make_phantom(seed, slices=slices, rows=256, columns=256).write_dicom(folder)  # about 130 KB a file
    files = sorted(folder.iterdir())
    sops = {p: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    return files, sops, str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def status(node: NodeProcess) -> str:
    command = [sys.executable, "-m", "node", "status", "--config", str(node.config_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def test_below_the_free_space_floor_stores_get_0xa700_nothing_is_corrupted_and_service_resumes(
    tmp_path: Path,
) -> None:
    floor = 15
    node = NodeProcess(tmp_path / "node", CONFIG.format(floor=floor))
    files, sops, _ = series(tmp_path, 61, slices=60)
    with small_filesystem(node.data_dir, SIZE_MB) as kind:
        try:
            node.start()
            # About 2 MB above the floor: some 15 instances fit before it is crossed. The node looks at the
            # free space at most once a second, so the scanner sends 10 a second (a few more than 15 may
            # come in while the floor is being crossed).
            filler = fill(node.data_dir, floor + 2)
            statuses = send_files(files, node.port, on_status=lambda *_: time.sleep(0.1))
            acked = {sops[p]: "" for p, s in statuses.items() if s == SUCCESS}
            codes = [statuses.get(p) for p in files]
            print(f"\n{kind}: {len(acked)} stored, then {codes.count(OUT_OF_RESOURCES)} answered 0xA700")
            assert set(codes) == {SUCCESS, OUT_OF_RESOURCES}, codes
            first_refused = codes.index(OUT_OF_RESOURCES)
            assert 5 <= first_refused < len(files) - 10, codes
            assert set(codes[first_refused:]) == {OUT_OF_RESOURCES}, "once below the floor, every store is refused"
            assert consistent(node.data_dir, acked) == []
            assert len(index_rows(node.data_dir)) == len(acked)
            shown = status(node)
            assert "REFUSING STORES" in shown, shown
            # Space comes back: the refused instances are stored.
            filler.unlink()
            time.sleep(1.5)  # the node's free-space answer is cached for a second
            rest = [p for p in files if sops[p] not in acked]
            again = send_files(rest, node.port)
            assert set(again.values()) == {SUCCESS}, again
            acked.update({sops[p]: "" for p in rest})
            assert consistent(node.data_dir, acked) == []
            assert len(index_rows(node.data_dir)) == len(files)
            assert node.proc is not None and node.proc.poll() is None
            assert node.stop() == 0
        finally:
            node.kill()


def test_a_disk_that_really_fills_fails_the_write_with_0xa700_leaves_no_temp_file_and_the_node_goes_on(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "node", CONFIG.format(floor=0))
    files, sops, _ = series(tmp_path, 62, slices=12)
    with small_filesystem(node.data_dir, SIZE_MB) as kind:
        try:
            node.start()
            size_kb = files[0].stat().st_size // 1024
            # Less room than one instance: with no floor the node tries, and the write itself fails.
            filler = fill(node.data_dir, leave_mb=size_kb / 1024 / 3)
            statuses = send_files(files, node.port)
            codes = [statuses.get(p) for p in files]
            print(f"\n{kind}: {free_mb(node.data_dir) * 1024:.0f} KB free, {size_kb} KB an instance: {codes}")
            acked = {sops[p]: "" for p, s in statuses.items() if s == SUCCESS}
            assert codes == [OUT_OF_RESOURCES] * len(files), codes
            assert consistent(node.data_dir, acked) == []
            assert not list((node.data_dir / "spool").rglob("*.dcm")), "no partial file in the spool"
            assert node.proc is not None and node.proc.poll() is None, "serve must go on"
            assert "No space left on device" in node.log(), "the write itself must have failed"
            assert "Traceback" not in node.log(), node.log()[-3000:]
            # Space comes back: the same instances are stored.
            filler.unlink()
            again = send_files(files, node.port)
            assert set(again.values()) == {SUCCESS}, again
            assert consistent(node.data_dir, {s: "" for s in sops.values()}) == []
            assert node.stop() == 0
        finally:
            node.kill()


def test_a_disk_that_fills_in_the_middle_of_a_series_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    """No floor and room for a few instances: the stores that fit succeed, the others get 0xA700; the
    index and the spool agree (a write or a commit that failed left nothing behind)."""
    node = NodeProcess(tmp_path / "node", CONFIG.format(floor=0))
    files, sops, _ = series(tmp_path, 63, slices=24)
    with small_filesystem(node.data_dir, SIZE_MB):
        try:
            node.start()
            size_kb = files[0].stat().st_size // 1024
            filler = fill(node.data_dir, leave_mb=6.5 * size_kb / 1024)
            statuses = send_files(files, node.port)
            codes = [statuses.get(p) for p in files]
            acked = {sops[p]: "" for p, s in statuses.items() if s == SUCCESS}
            print(f"\n{len(acked)} stored, {codes.count(OUT_OF_RESOURCES)} answered 0xA700: {codes}")
            assert set(codes) <= {SUCCESS, OUT_OF_RESOURCES}, codes
            assert 1 <= len(acked) < len(files)
            assert consistent(node.data_dir, acked) == []
            assert node.proc is not None and node.proc.poll() is None
            filler.unlink()
            rest = [p for p in files if sops[p] not in acked]
            assert set(send_files(rest, node.port).values()) == {SUCCESS}
            assert consistent(node.data_dir, {s: "" for s in sops.values()}) == []
            assert node.stop() == 0
        finally:
            node.kill()

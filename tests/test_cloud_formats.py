"""PCD and LAS writers, read back by independent readers: Open3D and a plain parse of the PCD format; laspy for LAS.
Failures are real: a missing folder, a file in the way, and a full disk (a file-size limit in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import laspy
import numpy as np
import open3d as o3d
import pytest

from converter.exports.cloud_formats import write_las, write_pcd
from converter.errors import OutputError

ROOT = Path(__file__).resolve().parent.parent


def cloud(count: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = rng.normal(0.0, 1.0, (count, 3)).astype(np.float32) + np.float32([0.0, 0.0, -3.0])
    colors = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    colors[0] = (0, 0, 0)
    colors[1] = (255, 255, 255)
    normals = rng.normal(size=(count, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return points, colors, normals


def parse_pcd(path: Path) -> tuple[dict[str, list[str]], np.ndarray]:
    """A small PCD reader written from the format's description: a text header of ``KEY values`` lines ending with
    ``DATA binary``, then POINTS records of the FIELDS with the given SIZE, TYPE and COUNT, little-endian."""
    data = path.read_bytes()
    header: dict[str, list[str]] = {}
    position = 0
    while True:
        end = data.index(b"\n", position)
        line = data[position:end].decode("ascii").strip()
        position = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key] = values
        if key == "DATA":
            break
    assert header["DATA"] == ["binary"]
    kinds = {("F", "4"): "<f4", ("U", "4"): "<u4", ("U", "1"): "u1", ("F", "8"): "<f8"}
    dtype = np.dtype([
        (name, kinds[(kind, size)], (int(count),)) if int(count) > 1 else (name, kinds[(kind, size)])
        for name, size, kind, count in zip(header["FIELDS"], header["SIZE"], header["TYPE"], header["COUNT"])
    ])
    count = int(header["POINTS"][0])
    assert len(data) - position == count * dtype.itemsize  # nothing missing, nothing extra
    return header, np.frombuffer(data, dtype=dtype, offset=position, count=count)


# ---------------------------------------------------------------------------------------------------------- PCD


@pytest.mark.parametrize("with_normals", [False, True], ids=["colours", "colours+normals"])
def test_pcd_reads_back_with_open3d_and_a_plain_parser(tmp_path, with_normals):
    points, colors, normals = cloud()
    path = tmp_path / "cloud.pcd"
    write_pcd(path, points, colors, normals if with_normals else None)
    assert os.listdir(tmp_path) == ["cloud.pcd"]  # no temporary file or folder left

    header, records = parse_pcd(path)
    expected_fields = ["x", "y", "z"] + (["normal_x", "normal_y", "normal_z"] if with_normals else []) + ["rgb"]
    assert header["FIELDS"] == expected_fields
    assert header["POINTS"] == [str(len(points))] and header["WIDTH"] == [str(len(points))]
    assert header["HEIGHT"] == ["1"] and header["VERSION"] == ["0.7"]
    np.testing.assert_array_equal(np.column_stack([records["x"], records["y"], records["z"]]), points)
    rgb = records["rgb"].astype(np.uint32)  # PCL packs colours as 0x00RRGGBB
    unpacked = np.column_stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255]).astype(np.uint8)
    np.testing.assert_array_equal(unpacked, colors)
    if with_normals:
        stored = np.column_stack([records["normal_x"], records["normal_y"], records["normal_z"]])
        np.testing.assert_array_equal(stored, normals)

    read = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(read.points), points, atol=0)
    np.testing.assert_array_equal(np.rint(np.asarray(read.colors) * 255).astype(np.uint8), colors)
    assert read.has_normals() == with_normals


def test_pcd_is_pcd_whatever_the_target_is_called(tmp_path):
    points, colors, _ = cloud(50)
    path = tmp_path / "scan.download"
    write_pcd(path, points, colors)
    _, records = parse_pcd(path)
    assert len(records) == 50
    assert os.listdir(tmp_path) == ["scan.download"]


def test_empty_cloud_gives_a_valid_pcd_without_points(tmp_path):
    # Open3D refuses to write an empty cloud; we write the header with POINTS 0 (as the PLY writer writes a PLY with
    # no vertices), and Open3D reads that back as an empty cloud.
    path = tmp_path / "empty.pcd"
    write_pcd(path, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    header, records = parse_pcd(path)
    assert header["POINTS"] == ["0"] and header["FIELDS"] == ["x", "y", "z", "rgb"] and len(records) == 0
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        assert len(o3d.io.read_point_cloud(str(path)).points) == 0


def test_pcd_overwrites_atomically(tmp_path):
    path = tmp_path / "cloud.pcd"
    path.write_bytes(b"old")
    points, colors, _ = cloud(10)
    write_pcd(path, points, colors)
    assert len(parse_pcd(path)[1]) == 10 and os.listdir(tmp_path) == ["cloud.pcd"]


# ---------------------------------------------------------------------------------------------------------- LAS


def test_las_reads_back_with_laspy(tmp_path):
    points, colors, _ = cloud()
    path = tmp_path / "cloud.las"
    write_las(path, points, colors, metric=False)
    assert os.listdir(tmp_path) == ["cloud.las"]

    las = laspy.read(path)
    header = las.header
    assert header.point_count == len(points) and len(las.points) == len(points)
    assert header.point_format.id == 2 and str(header.version) == "1.2"
    assert header.generating_software == "image-to-3d"
    assert "z up" in header.system_identifier and "relative" in header.system_identifier
    extent = (points.max(0) - points.min(0)).max()
    scale = header.scales[0]
    assert (header.scales == scale).all() and scale <= 1e-6 * extent
    np.testing.assert_allclose(header.offsets, points.min(0), rtol=0, atol=1e-6)
    xyz = np.column_stack([las.x, las.y, las.z])
    assert np.abs(xyz - points.astype(np.float64)).max() <= scale / 2 * (1 + 1e-6)
    stored = np.column_stack([las.red, las.green, las.blue])
    np.testing.assert_array_equal(stored, colors.astype(np.uint16) * 257)
    assert stored.max() == 65535 and stored.min() == 0
    np.testing.assert_allclose(header.mins, points.min(0), atol=scale)
    np.testing.assert_allclose(header.maxs, points.max(0), atol=scale)


def test_metric_las_keeps_millimetres(tmp_path):
    # Points a few metres away: half on a millimetre lattice shifted by 0.3 mm, half nudged off it by up to 0.45 mm.
    # Every point must come back within half a millimetre, and lattice points a millimetre apart must stay exactly
    # one step apart (a coarser scale would merge them, a finer one is not millimetres).
    rng = np.random.default_rng(1)
    millimetres = rng.integers(-3000, 3000, (5000, 3))
    nudge = np.zeros((5000, 3))
    nudge[2500:] = rng.uniform(-0.00045, 0.00045, (2500, 3))
    points = millimetres / 1000.0 + 0.0003 + nudge + (10.0, 1.5, -4.0)
    colors = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    path = tmp_path / "metric.las"
    write_las(path, points, colors, metric=True)

    las = laspy.read(path)
    assert (las.header.scales == 0.001).all()
    assert "metres" in las.header.system_identifier
    np.testing.assert_allclose(las.header.offsets, points.min(0))
    xyz = np.column_stack([las.x, las.y, las.z])
    assert np.abs(xyz - points).max() <= 0.0005 + 1e-9
    lattice = xyz[:2500]
    steps = np.rint((lattice - lattice.min(0)) * 1000).astype(np.int64)
    np.testing.assert_array_equal(steps, millimetres[:2500] - millimetres[:2500].min(0))
    assert np.abs((lattice - lattice.min(0)) * 1000 - steps).max() < 1e-6  # whole millimetres apart


def test_las_of_a_huge_metric_cloud_still_fits_32_bits(tmp_path):
    points = np.array([[0.0, 0.0, 0.0], [5.0e6, 1.0, -2.0]])
    write_las(tmp_path / "far.las", points, np.zeros((2, 3), np.uint8), metric=True)
    las = laspy.read(tmp_path / "far.las")
    scale = las.header.scales[0]
    assert scale == pytest.approx(0.01)  # the coarsest step that fits: still far finer than the extent
    assert np.abs(np.column_stack([las.x, las.y, las.z]) - points).max() <= scale / 2 + 1e-9


def test_empty_cloud_gives_a_las_without_points(tmp_path):
    path = tmp_path / "empty.las"
    write_las(path, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), metric=False)
    las = laspy.read(path)
    assert las.header.point_count == 0 and len(las.points) == 0 and las.header.point_format.id == 2


def test_non_finite_points_are_refused_before_writing(tmp_path):
    points, colors, _ = cloud(5)
    points[2, 1] = np.nan
    with pytest.raises(ValueError):
        write_las(tmp_path / "bad.las", points, colors, metric=True)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("writer", ["pcd", "las"])
def test_unwritable_target_is_an_output_error_and_leaves_nothing(tmp_path, writer):
    points, colors, _ = cloud(100)

    def write(path):
        if writer == "pcd":
            write_pcd(path, points, colors)
        else:
            write_las(path, points, colors, metric=True)

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("I am a file")
    with pytest.raises(OutputError) as caught:
        write(blocker / f"cloud.{writer}")
    assert f"cloud.{writer}" in str(caught.value) and str(tmp_path) not in str(caught.value)
    with pytest.raises(OutputError, match="does not exist"):
        write(tmp_path / "missing" / f"cloud.{writer}")
    (tmp_path / f"cloud.{writer}").mkdir()
    with pytest.raises(OutputError, match="folder"):
        write(tmp_path / f"cloud.{writer}")
    assert sorted(os.listdir(tmp_path)) == sorted([f"cloud.{writer}", "not-a-folder"])
    assert os.listdir(tmp_path / f"cloud.{writer}") == []


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_full_disk_is_an_output_error_and_leaves_nothing(tmp_path):
    """A file-size limit makes writes fail as a full disk does. Open3D does not notice (it returns True with a
    truncated file), so write_pcd checks the size itself."""
    script = textwrap.dedent(
        """
        import os, resource, signal, sys
        import numpy as np
        from converter.exports.cloud_formats import write_las, write_pcd
        from converter.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        points, colors = np.random.default_rng(0).random((20000, 3)), np.zeros((20000, 3), np.uint8)
        for name, write in (("cloud.pcd", write_pcd), ("cloud.las", lambda p, a, b: write_las(p, a, b, metric=True))):
            try:
                write(os.path.join(sys.argv[1], name), points, colors)
                print(name, "written")
            except OutputError as error:
                print(name, "OutputError:", error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cloud.pcd OutputError:") and "disk may be full" in lines[0]
    assert lines[1].startswith("cloud.las OutputError:") and "disk space" in lines[1]
    assert os.listdir(tmp_path) == []

"""Camera model, back-projection, depth edges, disparity mapping and sampling, checked against analytic scenes and
against Open3D. Depth maps are user-supplied metric maps (no model needed) unless a test says otherwise."""

from __future__ import annotations

import io
import math

import numpy as np
import open3d as o3d
import pytest
import torch

from converter import ConversionOptions, Converter, OptionError, geometry
from converter.depth import METRIC, DepthMap
from converter.images import load_image
from converter.pipeline import build_point_cloud

H, W = 48, 64  # small, non-square, even sizes
BLACK = np.zeros((H, W, 3), np.uint8)


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def convert_metric(depth: np.ndarray, image: np.ndarray | None = None, **options):
    """Convert with a user metric depth map, one point per pixel unless options say otherwise."""
    options.setdefault("max_points", 0)
    options.setdefault("depth_kind", "metric")
    image = np.zeros(depth.shape + (3,), np.uint8) if image is None else image
    return Converter().convert(image, depth=npy_bytes(depth), options=ConversionOptions(**options))


def rays(intrinsics: geometry.Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV-frame ray direction components (x/z, y/z) for every pixel centre, [H, W] each, in float64."""
    v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
    return (u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy


def expected_points(depth: np.ndarray, intrinsics: geometry.Intrinsics) -> np.ndarray:
    """The documented formula: x = (u − cx)·z/fx, y = −(v − cy)·z/fy, z = −depth; [H, W, 3] float64."""
    x_over_z, y_over_z = rays(intrinsics)
    depth = depth.astype(np.float64)
    return np.dstack([x_over_z * depth, -y_over_z * depth, -depth])


# --------------------------------------------------------------------------------------------------- intrinsics


def test_default_intrinsics_are_a_60_degree_horizontal_fov_centred_on_the_image():
    k = geometry.make_intrinsics(W, H)
    assert k.source == "default:fov60"
    assert k.fx == pytest.approx(W / (2 * math.tan(math.radians(30))))
    assert k.fy == k.fx  # square pixels
    assert (k.cx, k.cy) == ((W - 1) / 2, (H - 1) / 2)
    assert k.fov_x_deg == pytest.approx(60.0)
    assert k.fov_y_deg == pytest.approx(math.degrees(2 * math.atan(H / 2 / k.fx)))
    np.testing.assert_array_equal(k.as_matrix(), [[k.fx, 0, k.cx], [0, k.fy, k.cy], [0, 0, 1]])
    assert k.to_dict()["fov_x_deg"] == pytest.approx(60.0)


@pytest.mark.parametrize(
    "kwargs, fx, source",
    [
        ({}, W / (2 * math.tan(math.radians(30))), "default:fov60"),
        ({"exif_focal_px": 77.0, "exif_source": "exif:test"}, 77.0, "exif:test"),
        ({"exif_focal_px": 77.0}, 77.0, "exif"),
        ({"fov_deg": 90.0, "exif_focal_px": 77.0}, W / 2, "user:fov"),
        ({"focal_px": 123.0, "fov_deg": 90.0, "exif_focal_px": 77.0}, 123.0, "user:focal_px"),
        ({"focal_px": 123.0}, 123.0, "user:focal_px"),
        ({"exif_focal_px": 0.0}, W / (2 * math.tan(math.radians(30))), "default:fov60"),  # 0 = unknown
    ],
)
def test_focal_length_precedence_is_focal_px_then_fov_then_exif_then_default(kwargs, fx, source):
    k = geometry.make_intrinsics(W, H, **kwargs)
    assert k.fx == pytest.approx(fx)
    assert k.fy == pytest.approx(fx)
    assert k.source == source


@pytest.mark.parametrize("fov", [1.0, 30.0, 60.0, 90.0, 120.0, 179.0])
def test_focal_from_fov_round_trips_through_fov_x(fov):
    k = geometry.make_intrinsics(W, H, fov_deg=fov)
    assert k.fov_x_deg == pytest.approx(fov)


def test_principal_point_override():
    k = geometry.make_intrinsics(W, H, principal_point=(10.5, 40.0))
    assert (k.cx, k.cy) == (10.5, 40.0)


# ----------------------------------------------------------------------------------------- analytic scenes


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"fov_deg": 90.0},
        {"focal_px": 40.0},
        {"focal_px": 55.5, "principal_point": (20.0, 30.25)},
        {"fov_deg": 30.0, "principal_point": (0.0, 0.0)},
    ],
)
def test_fronto_parallel_plane_at_two_metres(options):
    result = convert_metric(np.full((H, W), 2.0), **options)
    assert result.units == "metres"
    assert len(result.points) == H * W  # clean=True removes nothing from a flat plane
    assert result.keep.all()
    np.testing.assert_array_equal(result.points[:, 2], -2.0)
    k = result.intrinsics
    if "focal_px" in options:
        assert k.fx == options["focal_px"]
    if "principal_point" in options:
        assert (k.cx, k.cy) == options["principal_point"]
    expected = expected_points(np.full((H, W), 2.0), k).reshape(-1, 3)
    np.testing.assert_allclose(result.points, expected, rtol=1e-6, atol=1e-6)
    # The principal point's ray is the optical axis; the image edges are at ±fov/2.
    if "principal_point" not in options:
        assert result.points[:, 0].max() == pytest.approx((W - 1) / 2 * 2 / k.fx, rel=1e-6)
        assert result.points[:, 0].min() == pytest.approx(-result.points[:, 0].max(), rel=1e-6)


def test_depth_is_along_the_optical_axis_not_along_the_ray():
    result = convert_metric(np.full((H, W), 3.0))
    distances = np.linalg.norm(result.points, axis=1)
    assert np.all(distances >= 3.0 - 1e-6)
    assert distances.max() > 3.0 * 1.05  # corner rays are longer than the axis


def test_axes_y_up_x_right_camera_looking_down_negative_z():
    result = convert_metric(np.full((H, W), 2.0))
    grid = result.points.reshape(H, W, 3)
    assert np.all(grid[0, :, 1] > grid[-1, :, 1])  # the top row is higher
    assert np.all(grid[:, 0, 0] < grid[:, -1, 0])  # the left column is further left
    assert np.all(grid[:, :, 2] < 0)  # in front of the camera is −z
    assert np.all(np.diff(grid[:, :, 0], axis=1) > 0)
    assert np.all(np.diff(grid[:, :, 1], axis=0) < 0)
    # x right and y up with the scene at −z: right-handed, +z points back at the viewer (OpenGL).
    right = grid[H // 2, -1] - grid[H // 2, 0]
    up = grid[0, W // 2] - grid[-1, W // 2]
    assert np.cross(right, up)[2] > 0


def tilted_plane_depth(intrinsics, normal, distance):
    """Depth of the plane n · X = d (OpenCV camera frame) seen through every pixel."""
    x_over_z, y_over_z = rays(intrinsics)
    return distance / (normal[0] * x_over_z + normal[1] * y_over_z + normal[2])


@pytest.mark.parametrize(
    "normal, distance",
    [
        ((0.3, 0.0, 1.0), 2.0),
        ((0.0, -0.4, 1.0), 3.0),
        ((0.25, 0.2, 1.0), 1.5),
    ],
)
def test_tilted_plane_stays_planar(normal, distance):
    normal = np.array(normal) / np.linalg.norm(normal)
    k = geometry.make_intrinsics(W, H)
    depth = tilted_plane_depth(k, normal, distance)
    assert np.all(depth > 0)
    result = convert_metric(depth)
    assert len(result.points) == H * W  # a moderately tilted plane has no depth edges
    points = result.points.astype(np.float64)
    centre = points.mean(axis=0)
    _, singular, vt = np.linalg.svd(points - centre, full_matrices=False)
    fitted = vt[-1]
    residuals = (points - centre) @ fitted
    scale = np.abs(points).max()
    assert np.abs(residuals).max() < 1e-5 * scale
    # The fitted plane is the analytic one, in the output frame (y and z flipped).
    expected_normal = normal * [1, -1, -1]
    assert abs(abs(fitted @ expected_normal) - 1) < 1e-6
    assert points @ expected_normal == pytest.approx(np.full(len(points), distance), rel=1e-5)


def sphere_depth(intrinsics, centre, radius):
    """Depth of the nearer intersection of every pixel ray with a sphere (OpenCV frame), 0 where it misses."""
    x_over_z, y_over_z = rays(intrinsics)
    directions = np.dstack([x_over_z, y_over_z, np.ones_like(x_over_z)])
    a = (directions**2).sum(-1)
    b = directions @ np.asarray(centre)
    c = np.dot(centre, centre) - radius**2
    disc = b**2 - a * c
    hit = disc >= 0
    t = np.where(hit, (b - np.sqrt(np.where(hit, disc, 0))) / a, 0.0)
    return t  # the ray's z component is 1, so t is the depth along the axis


@pytest.mark.parametrize("clean", [False, True])
def test_sphere_points_lie_on_the_sphere(clean):
    k = geometry.make_intrinsics(W, H, fov_deg=60)
    centre, radius = np.array([0.1, -0.05, 3.0]), 0.8
    depth = sphere_depth(k, centre, radius)
    hits = int((depth > 0).sum())
    assert 0.2 * H * W < hits < H * W  # the sphere fills part of the view
    result = convert_metric(depth, clean=clean)
    if clean:
        assert 0.5 * hits < len(result.points) <= hits  # only the steep silhouette rim is dropped
    else:
        assert len(result.points) == hits
    centre_out = centre * [1, -1, -1]
    distances = np.linalg.norm(result.points.astype(np.float64) - centre_out, axis=1)
    np.testing.assert_allclose(distances, radius, rtol=2e-6)
    assert np.all(result.points[:, 2] < 0)


# ------------------------------------------------------------------------------------------------- Open3D


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"focal_px": 45.0},
        {"fov_deg": 75.0, "principal_point": (25.0, 30.5)},
    ],
)
def test_points_equal_open3d_create_from_depth_image(options):
    rng = np.random.default_rng(1)
    k0 = geometry.make_intrinsics(W, H)
    depth = tilted_plane_depth(k0, np.array([0.2, 0.1, 1.0]), 2.0) + rng.uniform(0, 0.5, (H, W))
    depth = depth.astype(np.float32)
    depth[rng.random((H, W)) < 0.1] = 0.0  # holes: neither makes a point there
    result = convert_metric(depth, clean=False, **options)
    k = result.intrinsics
    intrinsic = o3d.camera.PinholeCameraIntrinsic(W, H, k.fx, k.fy, k.cx, k.cy)
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(np.ascontiguousarray(depth)), intrinsic, depth_scale=1.0, depth_trunc=1e6,
        project_valid_depth_only=True,
    )
    theirs = np.asarray(cloud.points)
    assert len(theirs) == int((depth > 0).sum()) == len(result.points)
    ours = result.points.astype(np.float64) * [1, -1, -1]  # to OpenCV axes: flip y and z
    # Both walk the image row by row, so the points correspond in order.
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())


# ------------------------------------------------------------------------------------------------ depth edges


def step_depth(near=1.0, far=3.0, column=W // 2):
    depth = np.full((H, W), near, np.float32)
    depth[:, column:] = far
    return depth


def test_depth_edges_mark_the_step_and_nothing_on_the_flat_parts():
    edges = geometry.depth_edges(step_depth())
    expected = np.zeros((H, W), bool)
    expected[:, W // 2 - 1: W // 2 + 1] = True
    np.testing.assert_array_equal(edges, expected)


def test_depth_edges_on_a_horizontal_step_and_a_square():
    depth = np.full((H, W), 2.0, np.float32)
    depth[10:20, 30:40] = 1.0
    edges = geometry.depth_edges(depth)
    rows, columns = np.nonzero(edges)
    assert rows.min() == 9 and rows.max() == 20 and columns.min() == 29 and columns.max() == 40
    assert not edges[12:18, 32:38].any()  # the inside of the square is flat
    assert not edges[:8].any() and not edges[22:].any()


@pytest.mark.parametrize("slope", [0.2, 0.4, -0.3])
def test_moderately_tilted_plane_has_no_edges(slope):
    k = geometry.make_intrinsics(W, H)
    depth = tilted_plane_depth(k, np.array([slope, slope / 2, 1.0]), 2.0)
    assert not geometry.depth_edges(depth).any()


def test_depth_edges_threshold_is_relative():
    depth = step_depth(1.0, 1.1)  # a 10 % jump
    assert geometry.depth_edges(depth, rtol=0.04).any()
    assert not geometry.depth_edges(depth, rtol=0.2).any()
    # The same relative jump far away is the same edge.
    np.testing.assert_array_equal(geometry.depth_edges(depth * 50), geometry.depth_edges(depth))


def test_invalid_depth_makes_holes_not_edges():
    depth = np.full((H, W), 2.0, np.float32)
    depth[10:20, 10:20] = 0.0
    depth[30, 30] = np.nan
    depth[31, 40] = np.inf
    edges = geometry.depth_edges(depth)
    assert not edges.any()


def test_cleaning_drops_the_points_at_the_step_and_clean_false_keeps_them():
    depth = step_depth()
    cleaned = convert_metric(depth, clean=True)
    kept = convert_metric(depth, clean=False)
    assert len(kept.points) == H * W
    assert len(cleaned.points) == H * W - 2 * H
    assert not cleaned.keep[:, W // 2 - 1: W // 2 + 1].any()
    assert cleaned.keep[:, : W // 2 - 1].all() and cleaned.keep[:, W // 2 + 1:].all()


def smoothed_step(native_shape, size, diagonal=False):
    """A 1 m / 3 m step at ``native_shape``, and its bicubic enlargement to ``size`` (as models' outputs are)."""
    nh, nw = native_shape
    rows, columns = np.mgrid[0:nh, 0:nw]
    position = columns + (0.6 * rows if diagonal else 0)
    native = np.where(position < nw / 2, 1.0, 3.0).astype(np.float32)
    values = torch.nn.functional.interpolate(
        torch.from_numpy(native)[None, None], size=size, mode="bicubic", align_corners=False
    )[0, 0].numpy()
    return native, values


@pytest.mark.parametrize("native_shape, size", [((12, 16), (48, 64)), ((16, 24), (100, 150)), ((48, 64), (48, 64))])
def test_cleaning_removes_flying_pixels_of_a_bicubic_smoothed_step(native_shape, size):
    native, values = smoothed_step(native_shape, size)
    between = (values > 1.0 + 1e-4) & (values < 3.0 - 1e-4)
    loaded = load_image(np.zeros(size + (3,), np.uint8))
    prediction = DepthMap(values=values, native=native, kind=METRIC)
    cleaned = build_point_cloud(loaded, prediction, ConversionOptions(max_points=0, clean=True))
    depth = -cleaned.points[:, 2]
    assert not np.any((depth > 1.0 + 1e-4) & (depth < 3.0 - 1e-4))  # nothing strictly between the planes
    assert len(cleaned.points) >= 0.8 * size[0] * size[1]  # ... and the planes themselves stay
    raw = build_point_cloud(loaded, prediction, ConversionOptions(max_points=0, clean=False))
    assert len(raw.points) == size[0] * size[1]
    assert int(np.sum((-raw.points[:, 2] > 1 + 1e-4) & (-raw.points[:, 2] < 3 - 1e-4))) == int(between.sum())


def test_cleaning_a_diagonal_smoothed_step_leaves_nothing_far_from_both_planes():
    """Bicubic ringing along a staircase leaves points within a percent of a plane; none fly between."""
    native, values = smoothed_step((16, 24), (64, 96), diagonal=True)
    loaded = load_image(np.zeros((64, 96, 3), np.uint8))
    prediction = DepthMap(values=values, native=native, kind=METRIC)
    options = ConversionOptions(max_points=0, clean=True)
    depth = -build_point_cloud(loaded, prediction, options).points[:, 2]
    tolerance = options.edge_rtol
    assert not np.any((depth > 1.0 * (1 + tolerance)) & (depth < 3.0 * (1 - tolerance)))
    raw = -build_point_cloud(loaded, prediction, ConversionOptions(max_points=0, clean=False)).points[:, 2]
    assert np.sum((raw > 1.0 * (1 + tolerance)) & (raw < 3.0 * (1 - tolerance))) > 50


def test_cleaning_a_smoothed_step_in_a_user_depth_map():
    _, values = smoothed_step((12, 16), (H, W))
    cleaned = convert_metric(values, clean=True)
    depth = -cleaned.points[:, 2]
    assert not np.any((depth > 1.0 + 1e-4) & (depth < 3.0 - 1e-4))
    assert np.any((-convert_metric(values, clean=False).points[:, 2] > 1.1))


# --------------------------------------------------------------------------------------- disparity → depth


def test_disparity_bounds_are_robust_percentiles_inside_the_mask():
    disparity = np.linspace(0.0, 1.0, 101, dtype=np.float32).reshape(1, -1)
    low, high = geometry.disparity_bounds(disparity)
    assert (low, high) == pytest.approx((0.02, 0.98), abs=1e-6)
    mask = disparity > 0.5
    low, high = geometry.disparity_bounds(disparity, mask)
    assert (low, high) == pytest.approx(tuple(np.percentile(disparity[mask], [2, 98])), abs=1e-6)
    assert low > 0.5
    # An empty mask falls back to every finite value; no finite value at all gives (0, 0).
    assert geometry.disparity_bounds(disparity, np.zeros_like(mask)) == pytest.approx((0.02, 0.98), abs=1e-6)
    assert geometry.disparity_bounds(np.full((2, 2), np.nan)) == (0.0, 0.0)


def test_disparity_to_depth_is_monotonic_and_spans_near_to_far():
    rng = np.random.default_rng(0)
    disparity = rng.uniform(0.1, 5.0, (40, 50)).astype(np.float32)
    depth = geometry.disparity_to_depth(disparity, geometry.disparity_bounds(disparity), relief=1.0)
    assert depth.dtype == np.float32
    order = np.argsort(disparity, axis=None)
    assert np.all(np.diff(depth.ravel()[order]) <= 1e-6)  # larger disparity → nearer
    assert depth.min() == pytest.approx(1.0, rel=1e-6)
    assert depth.max() == pytest.approx(2.0, rel=1e-6)
    assert np.all((depth >= 1.0 - 1e-6) & (depth <= 2.0 + 1e-6))


@pytest.mark.parametrize("relief, near", [(0.5, 1.0), (1.0, 1.0), (3.0, 1.0), (1.0, 2.5)])
def test_relief_and_near_set_the_depth_range(relief, near):
    disparity = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
    depth = geometry.disparity_to_depth(disparity, geometry.disparity_bounds(disparity), relief, near)
    assert depth.min() == pytest.approx(near, rel=1e-5)
    assert depth.max() == pytest.approx(near * (1 + relief), rel=1e-5)


def test_disparity_to_depth_is_linear_in_inverse_depth_between_the_bounds():
    disparity = np.linspace(0.0, 1.0, 200, dtype=np.float32)[None, :]
    bounds = (0.1, 0.9)
    depth = geometry.disparity_to_depth(disparity, bounds, relief=2.0)
    inside = (disparity > 0.1) & (disparity < 0.9)
    slope, intercept = np.polyfit(disparity[inside], 1 / depth[inside], 1)
    np.testing.assert_allclose(slope * disparity[inside] + intercept, 1 / depth[inside], rtol=1e-5)
    assert slope > 0
    # Clamped beyond the bounds.
    assert np.all(depth[disparity <= 0.1] == pytest.approx(3.0, rel=1e-6))
    assert np.all(depth[disparity >= 0.9] == pytest.approx(1.0, rel=1e-6))


def test_disparity_outliers_are_clamped_and_do_not_squash_the_rest():
    rng = np.random.default_rng(3)
    disparity = rng.uniform(1.0, 2.0, (50, 50)).astype(np.float32)
    clean_depth = geometry.disparity_to_depth(disparity, geometry.disparity_bounds(disparity))
    spoiled = disparity.copy()
    spoiled[0, :5] = 1e6
    spoiled[1, :5] = -1e6
    depth = geometry.disparity_to_depth(spoiled, geometry.disparity_bounds(spoiled))
    assert np.all((depth >= 1.0 - 1e-6) & (depth <= 2.0 + 1e-6))
    np.testing.assert_allclose(depth[2:], clean_depth[2:], atol=0.02)  # a naive min/max would make this flat
    assert depth[0, 0] == pytest.approx(1.0) and depth[1, 0] == pytest.approx(2.0)


def test_constant_disparity_gives_a_flat_plane_and_non_finite_gives_no_depth():
    disparity = np.full((10, 12), 0.7, np.float32)
    disparity[0, 0] = np.nan
    disparity[0, 1] = np.inf
    depth = geometry.disparity_to_depth(disparity, geometry.disparity_bounds(disparity), relief=1.0)
    assert depth[0, 0] == 0 and depth[0, 1] == 0
    assert np.all(depth.ravel()[2:] == 1.0)
    assert not geometry.valid_depth(depth)[0, :2].any()
    with pytest.raises(ValueError):
        geometry.disparity_to_depth(disparity, (0.0, 1.0), relief=0.0)


# --------------------------------------------------------------------------------------- sampling and colour


@pytest.mark.parametrize(
    "width, height, max_points",
    [(64, 48, 0), (64, 48, 64 * 48), (64, 48, 10_000), (64, 48, 1000), (64, 48, 100), (64, 48, 1),
     (200, 10, 300), (10, 200, 300), (150, 100, 7_499), (97, 61, 555)],
)
def test_pixel_grid_never_exceeds_max_points_and_is_uniform(width, height, max_points):
    columns, rows = geometry.pixel_grid(width, height, max_points)
    count = len(columns) * len(rows)
    if max_points == 0 or max_points >= width * height:
        assert count == width * height
        np.testing.assert_array_equal(columns, np.arange(width))
        np.testing.assert_array_equal(rows, np.arange(height))
        return
    assert 1 <= count <= max_points
    assert count >= 0.75 * max_points or max_points < 50  # it uses most of the allowance
    for indices, size in ((columns, width), (rows, height)):
        assert indices.min() >= 0 and indices.max() < size
        assert np.all(np.diff(indices) > 0)
        step = size / len(indices)
        expected = np.floor((np.arange(len(indices)) + 0.5) * step)
        np.testing.assert_array_equal(indices, expected)  # the pixel at the centre of each equal block
        if len(indices) > 1:
            assert np.ptp(np.diff(indices)) <= 1  # uniform spacing


@pytest.mark.parametrize("max_points", [0, 100, 500, 3000, H * W, 10 * H * W])
def test_converter_never_returns_more_points_than_max_points(max_points):
    result = convert_metric(np.full((H, W), 2.0), max_points=max_points)
    limit = H * W if max_points == 0 else min(max_points, H * W)
    assert len(result.points) <= limit
    assert len(result.points) == len(result.grid_rows) * len(result.grid_columns)
    assert result.keep.shape == (len(result.grid_rows), len(result.grid_columns))
    # The subsampled points are the full-resolution points at the grid's pixels.
    full = convert_metric(np.full((H, W), 2.0), max_points=0).points.reshape(H, W, 3)
    np.testing.assert_allclose(
        result.points.reshape(len(result.grid_rows), len(result.grid_columns), 3),
        full[np.ix_(result.grid_rows, result.grid_columns)], rtol=1e-6,
    )


def test_subsampled_colours_are_box_averaged():
    checkerboard = ((np.indices((H, W)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.dstack([checkerboard] * 3)
    result = convert_metric(np.full((H, W), 2.0), image=image, max_points=(H // 2) * (W // 2))
    assert (len(result.grid_rows), len(result.grid_columns)) == (H // 2, W // 2)  # stride 2
    assert np.all((result.colors >= 127) & (result.colors <= 128))  # grey, not black or white (no aliasing)
    full = convert_metric(np.full((H, W), 2.0), image=image, max_points=0)
    assert set(np.unique(full.colors)) == {0, 255}


def test_transparent_pixels_do_not_darken_subsampled_colours():
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, 1::2] = [200, 40, 10, 255]  # opaque orange on odd columns (where the stride-2 grid samples)
    rgba[:, 0::2] = [0, 0, 0, 0]  # transparent black between them
    result = convert_metric(np.full((H, W), 2.0), image=rgba, max_points=(H // 2) * (W // 2), clean=False)
    assert len(result.points) == (H // 2) * (W // 2)
    np.testing.assert_allclose(result.colors, np.tile([200, 40, 10], (len(result.colors), 1)), atol=1)


def test_full_resolution_colours_are_the_pixels():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    result = convert_metric(np.full((H, W), 2.0), image=image)
    np.testing.assert_array_equal(result.colors, image.reshape(-1, 3))


# ----------------------------------------------------------------------------------------------------- normals


def test_normals_of_planes_face_the_camera():
    k = geometry.make_intrinsics(W, H)
    flat = convert_metric(np.full((H, W), 2.0), normals=True)
    np.testing.assert_allclose(flat.normals, np.tile([0, 0, 1], (H * W, 1)), atol=1e-6)
    normal = np.array([0.3, -0.2, 1.0])
    normal /= np.linalg.norm(normal)
    tilted = convert_metric(tilted_plane_depth(k, normal, 2.0), normals=True)
    assert tilted.normals.shape == tilted.points.shape and tilted.normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tilted.normals, axis=1), 1.0, rtol=1e-5)
    # −n in the output frame: it points from the plane back towards the camera.
    np.testing.assert_allclose(tilted.normals, np.tile(-normal * [1, -1, -1], (H * W, 1)), atol=1e-4)
    assert np.all(np.einsum("ij,ij->i", tilted.normals, -tilted.points) > 0)


def test_sphere_normals_point_outwards_towards_the_camera():
    k = geometry.make_intrinsics(W, H)
    centre = np.array([0.0, 0.0, 3.0])
    result = convert_metric(sphere_depth(k, centre, 1.0), normals=True, clean=True)
    outward = result.points - centre * [1, -1, -1]
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    cosine = np.einsum("ij,ij->i", result.normals, outward)
    assert np.median(cosine) > 0.99
    assert np.mean(cosine > 0.9) > 0.9  # central differences are only rough at the rim


def test_no_normals_unless_asked():
    assert convert_metric(np.full((H, W), 2.0)).normals is None


# ----------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {"fov_deg": 0}, {"fov_deg": 180}, {"fov_deg": float("nan")}, {"fov_deg": -10}, {"fov_deg": "60"},
        {"focal_px": -5.0}, {"focal_px": 0}, {"focal_px": float("inf")},
        {"principal_point": (1.0,)}, {"principal_point": (1.0, float("nan"))},
        {"relief": 0}, {"relief": -1}, {"relief": 1000},
        {"edge_rtol": 0}, {"edge_rtol": float("nan")},
        {"max_points": -1}, {"max_points": 2.5}, {"max_points": True}, {"max_points": "100"},
        {"depth_kind": "inches"}, {"principal_point": 5}, {"principal_point": "ab"},
        {"drop_background_percent": -1}, {"drop_background_percent": 100}, {"drop_background_percent": "5"},
    ],
)
def test_bad_options_are_option_errors(options):
    with pytest.raises(OptionError):
        ConversionOptions(**options)
    with pytest.raises(OptionError):
        convert_metric(np.full((H, W), 2.0), **options)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="fov"):
        ConversionOptions.from_kwargs(fov=60)
    with pytest.raises(TypeError, match="colour"):
        convert_metric(np.full((H, W), 2.0), colour="red")


def test_good_options_are_kept():
    options = ConversionOptions(fov_deg=45, focal_px=None, principal_point=[3, 4], relief=2, max_points=0)
    assert options.principal_point == (3.0, 4.0)
    assert options.to_dict()["fov_deg"] == 45
    assert ConversionOptions.from_kwargs(clean=False).clean is False


def test_numpy_numbers_are_accepted_and_stored_as_plain_numbers():
    import json

    options = ConversionOptions(fov_deg=np.float32(50), max_points=np.int64(500), relief=np.float16(2),
                                principal_point=np.array([3, 4]))
    assert options.max_points == 500 and type(options.max_points) is int
    assert options.fov_deg == 50 and type(options.fov_deg) is float
    assert options.principal_point == (3.0, 4.0)
    json.dumps(options.to_dict())  # no numpy scalars left in it
    result = convert_metric(np.full((H, W), 2.0), max_points=np.int64(500), fov_deg=np.float32(50))
    assert len(result.points) <= 500
    with pytest.raises(OptionError):
        ConversionOptions(max_points=np.float64(500.0))
    with pytest.raises(OptionError):
        ConversionOptions(fov_deg=np.bool_(True))


@pytest.mark.parametrize("mode", ["perspective", "relief"])
def test_points_and_colours_made_in_blocks_of_rows_are_the_whole_grids_kept_samples(monkeypatch, mode):
    """A block size that divides nothing (7 samples: one row of 5 at a time, the last block short) gives exactly the
    points, colours and normals of the whole grid's kept samples, in the same order."""
    rng = np.random.default_rng(3)
    height, width = 9, 5
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    values = rng.uniform(1.0, 3.0, (height, width)).astype(np.float32)
    values[2, 3] = np.nan  # a hole: not kept
    options = ConversionOptions(max_points=0, clean=False, mode=mode, normals=True)
    intrinsics = geometry.make_intrinsics(width, height)
    columns, rows = geometry.pixel_grid(width, height, 0)

    def cloud():
        return geometry.grid_cloud(rgb, None, values, values, metric=True, user_depth=False, options=options,
                                   intrinsics=intrinsics, columns=columns, rows=rows)

    monkeypatch.setattr(geometry, "BLOCK_SAMPLES", 7)
    blocks = cloud()
    if mode == "relief":
        whole = geometry.relief_backproject(blocks.heights, (width, height), columns, rows)
    else:
        whole = geometry.backproject(np.where(np.isfinite(values), values, 0), intrinsics, columns, rows)
    assert blocks.points.dtype == np.float32 and blocks.colors.dtype == np.uint8
    np.testing.assert_array_equal(blocks.points, whole[blocks.keep])
    np.testing.assert_array_equal(blocks.colors, rgb[blocks.keep])
    np.testing.assert_array_equal(blocks.normals, geometry.grid_normals(whole)[blocks.keep])
    assert len(blocks.points) == height * width - 1

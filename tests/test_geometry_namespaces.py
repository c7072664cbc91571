"""One geometry engine, two namespaces: converter.geometry's functions on numpy arrays and on torch tensors (what
the device path runs) against the numpy reference (build_point_cloud), the same tests for both.

torch runs on the CPU device here; the same ops run on CUDA. Depth maps of known shape (a tilted plane, a sphere, a
step) and a tiny model's real prediction; perspective and relief, clean on and off, background drop, normals, alpha,
metric and inverse-relative depth, a user's map with holes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converter import geometry
from converter.depth import INVERSE_RELATIVE, METRIC, DepthMap, get_depth_model
from converter.images import LoadedImage
from converter.options import ConversionOptions
from converter.pipeline import build_point_cloud
from converter.torch_kernels import values_at

NAMESPACES = ["numpy", "torch"]


def into(namespace: str, array):
    """``array`` (numpy, or None) as an array of ``namespace``."""
    if array is None or namespace == "numpy":
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


class Cloud:
    """A host GridCloud with the prediction at image size it was made from."""

    def __init__(self, cloud, values):
        self.__dict__.update(vars(cloud))
        self.values = values

H, W = 120, 160  # image
NH, NW = 48, 64  # native map


def plane() -> np.ndarray:
    rows, columns = np.mgrid[0:NH, 0:NW]
    return (2.0 + 0.03 * columns + 0.05 * rows).astype(np.float32)


def sphere() -> np.ndarray:
    rows, columns = np.mgrid[0:NH, 0:NW]
    r2 = ((rows - NH / 2) / (NH / 2.5)) ** 2 + ((columns - NW / 2) / (NH / 2.5)) ** 2
    return np.where(r2 < 1, 3.0 - np.sqrt(np.clip(1 - r2, 0, 1)), 4.0).astype(np.float32)


def step() -> np.ndarray:
    rows, columns = np.mgrid[0:NH, 0:NW]
    return np.where(columns < NW // 2, 2.0, 5.0).astype(np.float32) + 0.001 * rows


def as_disparity(depth: np.ndarray) -> np.ndarray:
    return (1.0 / depth).astype(np.float32)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rows, columns = np.mgrid[0:H, 0:W]
    noise = np.random.default_rng(3).integers(0, 40, (H, W, 3))
    return (np.dstack([columns * 1.5, rows * 2, (rows + columns) % 200]) + noise).clip(0, 255).astype(np.uint8)


def cutout_alpha() -> np.ndarray:
    """A disc cut-out with a soft, anti-aliased rim (as a cartoon's PNG has)."""
    rows, columns = np.mgrid[0:H, 0:W]
    distance = np.hypot(rows - H / 2, columns - W / 2)
    return np.clip((45 - distance) * 128, 0, 255).astype(np.uint8)


def run_both(namespace, rgb, alpha, native, kind, options, user=False, values=None):
    """(numpy reference result, geometry.grid_cloud's cloud on ``namespace``) for the same inputs. The values at
    image size are made in the namespace as the device path makes them (torch: bicubic or nearest from native)."""
    loaded = LoadedImage(rgb=rgb, alpha=alpha)
    prediction = DepthMap(values=native if values is None else values, native=native, kind=kind,
                          source="user" if user else "model")
    reference = build_point_cloud(loaded, prediction.resized(W, H), options)
    native_x = into(namespace, native)
    if namespace == "numpy":
        values_x = reference.prediction.values
    else:
        native_x = native_x.float()  # as the device path takes a model's output
        resized = geometry.take_grid(native_x, geometry.nearest_indices(NH, H), geometry.nearest_indices(NW, W)) \
            if user else values_at(native_x, H, W)  # a user's map: nearest neighbours, as DepthMap.resized
        values_x = resized if values is None else into(namespace, values)
    cloud = geometry.grid_cloud(
        into(namespace, rgb), into(namespace, alpha), values_x, native_x, metric=kind == METRIC, user_depth=user,
        options=options, intrinsics=reference.intrinsics, columns=reference.grid_columns, rows=reference.grid_rows,
    ).to_host()
    assert all(isinstance(array, np.ndarray) for array in (cloud.points, cloud.colors, cloud.depth, cloud.keep))
    if namespace == "numpy":  # the very function the CPU path runs: the same arrays
        np.testing.assert_array_equal(cloud.points, reference.points)
        np.testing.assert_array_equal(cloud.keep, reference.keep)
    return reference, Cloud(cloud, geometry.to_host(values_x))


def assert_same_cloud(reference, cloud, alpha=None):
    assert cloud.keep.shape == reference.keep.shape
    mismatched = np.count_nonzero(cloud.keep != reference.keep)
    assert mismatched <= max(1, reference.keep.size // 10_000)  # ties at a percentile cut may fall either way
    assert reference.keep.any()
    keep = cloud.keep & reference.keep
    np.testing.assert_allclose(cloud.values, reference.prediction.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cloud.depth, reference.depth, rtol=1e-4, atol=1e-6)
    if mismatched:
        return
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8
    scale = float(np.abs(reference.points).max())
    np.testing.assert_allclose(cloud.points, reference.points, rtol=1e-4, atol=1e-4 * scale)
    difference = np.abs(cloud.colors.astype(int) - reference.colors.astype(int))
    if alpha is None:
        assert difference.max() <= 1
    else:
        # PIL rounds between its two passes in an order of its own choosing; un-premultiplying a grid cell that
        # is mostly transparent amplifies that one level. Cells at least half opaque stay within a few levels.
        assert np.mean(difference <= 1) > 0.99
        assert difference.max() <= 8
    if reference.normals is None:
        assert cloud.normals is None
    else:
        np.testing.assert_allclose(cloud.normals, reference.normals, atol=1e-3)
    assert len(cloud.points) == int(keep.sum()) == len(cloud.colors)


SHAPES = {"plane": plane, "sphere": sphere, "step": step}
OPTIONS = {
    "default": ConversionOptions(),
    "grid+normals": ConversionOptions(max_points=5000, normals=True),
    "no-clean+drop": ConversionOptions(clean=False, drop_background_percent=20, max_points=0),
    "relief": ConversionOptions(mode="relief", max_points=4000),
    "relief+drop": ConversionOptions(mode="relief", drop_background_percent=10, relief=2.5),
    "fov+rtol": ConversionOptions(fov_deg=40, edge_rtol=0.03, max_points=7000),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", [INVERSE_RELATIVE, METRIC])
@pytest.mark.parametrize("option_name", sorted(OPTIONS))
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_matches_build_point_cloud(namespace, rgb, shape, kind, option_name):
    depth = SHAPES[shape]()
    native = as_disparity(depth) if kind == INVERSE_RELATIVE else depth
    reference, cloud = run_both(namespace, rgb, None, native, kind, OPTIONS[option_name])
    assert_same_cloud(reference, cloud)


@pytest.mark.parametrize("kind", [INVERSE_RELATIVE, METRIC])
@pytest.mark.parametrize("option_name", ["default", "grid+normals", "relief+drop"])
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_matches_with_a_transparent_background(namespace, rgb, kind, option_name):
    alpha = cutout_alpha()
    native = as_disparity(sphere()) if kind == INVERSE_RELATIVE else sphere()
    reference, cloud = run_both(namespace, rgb, alpha, native, kind, OPTIONS[option_name])
    assert_same_cloud(reference, cloud, alpha)
    # Transparent pixels make no points on either side.
    sampled = alpha[np.ix_(reference.grid_rows, reference.grid_columns)]
    assert not cloud.keep[sampled == 0].any()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_clean_drops_the_step_edge_and_keeps_the_flat_parts(namespace, rgb):
    options = ConversionOptions(max_points=0)
    reference, cloud = run_both(namespace, rgb, None, step(), METRIC, options)
    assert_same_cloud(reference, cloud)
    columns_dropped = np.where(~cloud.keep.all(axis=0))[0]
    assert len(columns_dropped) > 0
    assert np.all(np.abs(columns_dropped - W / 2) < 6)  # only around the step


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_user_disparity_map_with_holes(namespace, rgb):
    native = as_disparity(plane())
    native[5:9, 10:20] = 0.0
    native[20, 30] = np.nan
    native[30:33, 40:44] = np.inf
    reference, cloud = run_both(namespace, rgb, None, native, INVERSE_RELATIVE, ConversionOptions(max_points=0),
                                user=True)
    assert_same_cloud(reference, cloud)
    assert (cloud.depth == 0).any()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tiny_model_prediction(namespace, dpt_model, rgb):
    from PIL import Image

    prediction = get_depth_model(dpt_model, device="cpu").predict(Image.fromarray(rgb))
    for options in (ConversionOptions(), ConversionOptions(mode="relief", normals=True, max_points=3000)):
        loaded = LoadedImage(rgb=rgb, alpha=None)
        reference = build_point_cloud(loaded, prediction, options)
        cloud = geometry.grid_cloud(
            into(namespace, rgb), None, into(namespace, prediction.values), into(namespace, prediction.native),
            metric=prediction.kind == METRIC, user_depth=False, options=options, intrinsics=reference.intrinsics,
            columns=reference.grid_columns, rows=reference.grid_rows,
        ).to_host()
        assert_same_cloud(reference, Cloud(cloud, prediction.values))


# ----------------------------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 4097])
@pytest.mark.parametrize("q", [0.0, 2.0, 37.5, 98.0, 100.0])
def test_percentile_is_numpys(count, q):  # numpy: numpy itself
    values = np.random.default_rng(count).normal(size=count).astype(np.float32)
    values[: count // 3] = values[0]  # ties
    expected = np.percentile(values, q)
    got = float(geometry.percentile(torch.from_numpy(values), q))
    assert float(geometry.percentile(values, q)) == float(expected)
    assert got == pytest.approx(float(expected), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_disparity_bounds_respects_the_mask(namespace):
    disparity = np.random.default_rng(0).uniform(0, 1, (40, 50)).astype(np.float32)
    disparity[0, :] = np.nan
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:40] = True
    inside = disparity[mask & np.isfinite(disparity)]
    expected = tuple(float(v) for v in np.percentile(inside, (2.0, 98.0)))
    got = geometry.disparity_bounds(into(namespace, disparity), into(namespace, mask))
    assert got == pytest.approx(expected, rel=1e-6)
    assert geometry.disparity_bounds(into(namespace, np.full((3, 3), np.nan, np.float32))) == (0.0, 0.0)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_depth_edges_match_numpy(namespace):
    depth = sphere()
    depth[10:12, 10:12] = 0.0
    expected = geometry.depth_edges(depth, 0.02)
    got = geometry.to_host(geometry.depth_edges(into(namespace, depth), 0.02))
    assert expected.any() and not expected[10:12, 10:12].any()  # holes are not edges
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_grid_colors_average_only_opaque_pixels(namespace):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :2] = (200, 10, 10)  # opaque red on the left of each 2 × 2 block
    rgb[:, 2:] = (0, 0, 255)
    alpha = np.zeros((4, 4), np.uint8)
    alpha[:, 0] = alpha[:, 2] = 255  # in each block only the left column is opaque
    grid = np.array([1, 3])
    colors = geometry.to_host(geometry.grid_colors(into(namespace, rgb), into(namespace, alpha), grid, grid))
    # No dark fringe: the transparent half adds nothing (PIL's un-premultiplication truncates, hence ±1).
    np.testing.assert_allclose(colors[:, 0], [[200, 10, 10]] * 2, atol=1)
    np.testing.assert_allclose(colors[:, 1], [[0, 0, 255]] * 2, atol=1)
    np.testing.assert_array_equal(colors, geometry.grid_colors(rgb, alpha, grid, grid))


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_each_step_gives_numpys_numbers(namespace):
    """The building blocks one by one, on a depth map with holes: the namespace's result equals numpy's."""
    depth = sphere()
    depth[3:6, 7:9] = 0.0
    depth[20, 20] = np.nan
    disparity = as_disparity(np.where(depth > 0, depth, 1.0)).astype(np.float32)
    intrinsics = geometry.make_intrinsics(NW, NH, fov_deg=55)
    columns, rows = geometry.pixel_grid(NW, NH, 900)
    keep = geometry.valid_depth(depth)
    grid = depth[np.ix_(rows, columns)]
    heights = geometry.relief_heights(depth, keep, True, 1.5)
    cases = {
        "valid_depth": (geometry.valid_depth, (depth,), keep),
        "disparity_to_depth": (lambda d: geometry.disparity_to_depth(d, (0.25, 0.4), 2.0), (disparity,),
                               geometry.disparity_to_depth(disparity, (0.25, 0.4), 2.0)),
        "backproject": (lambda d: geometry.backproject(d, intrinsics, columns, rows), (grid,),
                        geometry.backproject(grid, intrinsics, columns, rows)),
        "grid_normals": (geometry.grid_normals, (geometry.backproject(depth, intrinsics),),
                         geometry.grid_normals(geometry.backproject(depth, intrinsics))),
        "relief_heights": (lambda d, k: geometry.relief_heights(d, k, True, 1.5), (depth, keep), heights),
        "relief_backproject": (lambda h: geometry.relief_backproject(h, (NW, NH)), (heights,),
                               geometry.relief_backproject(heights, (NW, NH))),
    }
    assert heights.max() > 0 and keep.sum() < keep.size
    for name, (function, arguments, expected) in cases.items():
        got = function(*(into(namespace, argument) for argument in arguments))
        assert (namespace == "numpy") == isinstance(got, np.ndarray), name  # the namespace it was given
        got = geometry.to_host(got)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)

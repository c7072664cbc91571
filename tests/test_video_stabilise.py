"""Stabilisation of per-frame depth (converter/video/stabilise.py) on synthetic clips with known depth: a truck shot
over a textured scene, whose disparity carries a random scale (±30 %), shift, 3 % noise and a wrong block in two
frames, as an unsteady model's would."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import video_scenes as scenes

from converter.video.stabilise import CutDetector, Stabiliser, _block_means


@pytest.fixture(scope="module")
def truck_shot():
    frames, depths, cameras = scenes.clip(64, 48, 12)
    disparities, scales, masks = scenes.perturbed_disparity(depths, seed=0, outlier_frames=(3, 7))
    return frames, depths, cameras, disparities, masks


def _run(frames, disparities, metric=False, enabled=True):
    stabiliser = Stabiliser(metric, enabled)
    outputs, fits = [], []
    for index, (rgb, disparity) in enumerate(zip(frames, disparities)):
        output, fit = stabiliser(index, index / 24, disparity, rgb)
        outputs.append(output)
        fits.append(fit)
    return outputs, fits


def test_one_scale_for_the_shot_and_less_flicker(truck_shot):
    frames, depths, cameras, disparities, masks = truck_shot
    stabilised, fits = _run(frames, disparities)
    unstabilised, _ = _run(frames, disparities, enabled=False)
    spread_in = scenes.scale_spread(disparities, depths, masks)
    spread_out = scenes.scale_spread(stabilised, depths, masks)
    assert spread_in > 0.1  # the input really is unsteady
    assert spread_out <= spread_in / 5
    tae_in = scenes.tae(disparities, depths, cameras, masks)
    tae_out = scenes.tae(stabilised, depths, cameras, masks)
    tae_alone = scenes.tae(unstabilised, depths, cameras, masks)
    assert tae_out <= tae_in / 3 and tae_out < tae_alone / 2
    assert [fit.reset for fit in fits] == ["start"] + [None] * 11
    # the wrong block is outvoted, not followed: those frames have fewer inliers, and their scale is still right
    shares = [fit.inlier_share for fit in fits[1:]]
    assert min(shares[2], shares[6]) < 0.85 < min(share for i, share in enumerate(shares) if i not in (2, 3, 6, 7))


def test_a_cut_resets_the_reference():
    frames, depths, _ = scenes.clip(64, 48, 12, cut_at=6)
    disparities, _, _ = scenes.perturbed_disparity(depths, seed=1, outlier_frames=())
    _, fits = _run(frames, disparities)
    assert fits[6].reset == "cut" and fits[6].shot == 1
    assert all(fit.shot_start == 6 and fit.shot == 1 for fit in fits[6:])  # never fitted to a frame before the cut
    assert all(fit.shot_start == 0 and fit.reset is None for fit in fits[1:6])


def test_metric_depth_is_stabilised_in_scale_only(truck_shot):
    frames, depths, _, _, _ = truck_shot
    rng = np.random.default_rng(3)
    scales = np.exp(rng.uniform(np.log(0.8), np.log(1.25), len(depths)))
    inverse = [(1.0 / (depth * scale)).astype(np.float32) for depth, scale in zip(depths, scales)]
    stabilised, fits = _run(frames, inverse, metric=True)
    assert all(fit.shift == 0.0 for fit in fits)
    ratios = [float(np.median(out * depth)) for out, depth in zip(stabilised, depths)]  # stabilised 1/z × true z
    assert np.ptp(np.log(ratios)) < 0.01 < np.ptp(np.log(scales))


def test_turned_off_each_frame_stands_alone(truck_shot):
    frames, _, _, disparities, _ = truck_shot
    outputs, fits = _run(frames, disparities, enabled=False)
    for output, fit in zip(outputs, fits):
        assert fit.reset == "unstabilised" and fit.inlier_share is None
        low, high = np.percentile(output[np.isfinite(output)], (2, 98))
        assert low == pytest.approx(1.0, abs=1e-4) and high == pytest.approx(2.0, abs=1e-4)


def test_the_cut_detector_ignores_motion_and_sees_a_new_scene():
    detector = CutDetector()
    frames, _, _ = scenes.clip(64, 48, 8, cut_at=5)
    assert [detector(rgb) for rgb in frames] == [False] * 5 + [True, False, False]


@pytest.mark.parametrize("shape, block", [((48, 64), 4), ((50, 67), 5), ((721, 1283), 5), ((30, 31), 7)])
def test_block_means_are_the_plain_means_of_each_block_nan_left_out(shape, block):
    rng = np.random.default_rng(block)
    values = rng.random(shape, dtype=np.float32) * 4 + 1
    holey = values.copy()
    holey[rng.random(shape) < 0.3] = np.nan
    holey[:block, :block] = np.nan  # one block with no value at all
    rows, columns = shape[0] // block, shape[1] // block
    for array in (values, holey):
        blocks = array[:rows * block, :columns * block].reshape(rows, block, columns, block).astype(np.float64)
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning) if array is holey else nullcontext():
            expected = np.nanmean(blocks, axis=(1, 3))
        means = _block_means(array, block)
        assert means.shape == (rows, columns) and means.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(means), np.isnan(expected))
        np.testing.assert_allclose(means, expected, rtol=1e-6)
    assert np.isnan(_block_means(holey, block)[0, 0])

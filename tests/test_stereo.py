"""Stereo pairs: a near square in front of a far textured wall, warped, z-buffered and hole-filled."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from converter.errors import InputError, OptionError, OutputError
from converter.exports import stereo
from converter.exports.stereo import anaglyph, normalised_nearness, side_by_side, stereo_pair, write_png

HEIGHT, WIDTH = 60, 100
TOP, BOTTOM, LEFT, RIGHT = 20, 40, 40, 60  # the square's rows and columns
SQUARE = (250, 200, 10)
WALL_BLUE = 100  # every wall pixel has this blue, the square never does
# strength 0.2 of 100 px = 20 px between far and near plane; convergence 0.5: each eye moves each plane 5 px.
STRENGTH, SHIFT = 0.2, 5


def scene() -> tuple[np.ndarray, np.ndarray]:
    """(rgb [60, 100, 3], depth [60, 100]): a wall 10 m away, textured in red and green, and a square 2 m away."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.dstack([20 + columns * 7 % 100, 30 + rows * 11 % 100, np.full_like(rows, WALL_BLUE)]).astype(np.uint8)
    depth = np.full((HEIGHT, WIDTH), 10.0, dtype=np.float32)
    rgb[TOP:BOTTOM, LEFT:RIGHT] = SQUARE
    depth[TOP:BOTTOM, LEFT:RIGHT] = 2.0
    return rgb, depth


def square_columns(view: np.ndarray) -> np.ndarray:
    """Columns holding the square's colour in the square's middle row."""
    return np.flatnonzero((view[(TOP + BOTTOM) // 2] == SQUARE).all(axis=1))


def test_square_and_wall_shift_by_their_own_disparity_in_each_eye():
    rgb, depth = scene()
    left, right = stereo_pair(rgb, depth, strength=STRENGTH, convergence=0.5)
    # Nearer than the screen: the square moves right in the left eye and left in the right eye.
    assert square_columns(left).tolist() == list(range(LEFT + SHIFT, RIGHT + SHIFT))
    assert square_columns(right).tolist() == list(range(LEFT - SHIFT, RIGHT - SHIFT))
    assert (left[TOP:BOTTOM, LEFT + SHIFT:RIGHT + SHIFT] == SQUARE).all()
    # Behind the screen: the wall moves the other way by the same amount (rows clear of the square, inner columns).
    rows = np.r_[0:TOP, BOTTOM:HEIGHT]
    np.testing.assert_array_equal(left[rows, :-SHIFT], rgb[rows, SHIFT:])
    np.testing.assert_array_equal(right[rows, SHIFT:], rgb[rows, :-SHIFT])


def test_convergence_zero_keeps_the_far_plane_on_the_screen():
    rgb, depth = scene()
    left, right = stereo_pair(rgb, depth, strength=STRENGTH, convergence=0.0)
    rows = np.r_[0:TOP, BOTTOM:HEIGHT]
    np.testing.assert_array_equal(left[rows], rgb[rows])
    assert square_columns(left)[0] - square_columns(right)[0] == 2 * SHIFT * 2  # the whole 20 px between the eyes


def test_disocclusions_are_filled_with_the_wall_not_the_square():
    rgb, depth = scene()
    left, right = stereo_pair(rgb, depth, strength=STRENGTH, convergence=0.5)
    # Square and wall move apart by 10 px: the left eye reveals wall left of the square, the right eye right of it.
    revealed_left = left[TOP:BOTTOM, LEFT - SHIFT:LEFT + SHIFT]
    revealed_right = right[TOP:BOTTOM, RIGHT - SHIFT:RIGHT + SHIFT]
    for revealed in (revealed_left, revealed_right):
        assert (revealed[..., 2] == WALL_BLUE).all()  # wall colours, no square colour smeared into the gap
        assert (revealed[..., :2] >= 20).all()  # and no black holes
        # The wall's texture continues into the strip (mirrored), rather than one colour streaked across it.
        assert len(np.unique(revealed[0, :, 0])) > 3


def test_no_holes_where_the_input_was_opaque_even_with_wild_depth():
    rng = np.random.default_rng(7)
    rgb = rng.integers(20, 256, size=(80, 90, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 50.0, size=(80, 90)).astype(np.float32)
    left, right = stereo_pair(rgb, depth, strength=0.1)
    for view in (left, right):
        assert view.shape == rgb.shape and view.dtype == np.uint8
        assert (view.max(axis=2) >= 20).all()  # the black background colour never shows: every hole was filled


def test_output_does_not_depend_on_depth_units():
    rgb, depth = scene()
    metres = stereo_pair(rgb, depth, strength=STRENGTH)
    millimetres = stereo_pair(rgb, depth * 1000.0, strength=STRENGTH)
    for a, b in zip(metres, millimetres):
        np.testing.assert_array_equal(a, b)


def test_constant_depth_gives_the_image_itself_in_both_eyes():
    rgb, _ = scene()
    for value in (0.3, 7.0, 1234.0):
        left, right = stereo_pair(rgb, np.full((HEIGHT, WIDTH), value, dtype=np.float32), strength=0.1)
        np.testing.assert_array_equal(left, rgb)  # flat: on the screen plane, no shift, no distortion
        np.testing.assert_array_equal(right, rgb)


def test_a_tilted_plane_keeps_straight_vertical_lines_and_shifts_smoothly():
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.where((columns % 10 < 4)[..., None], 255, 60).astype(np.uint8).repeat(3, axis=2)  # 4 px wide lines
    depth = np.broadcast_to(np.linspace(2.0, 8.0, HEIGHT, dtype=np.float32)[:, None], (HEIGHT, WIDTH)).copy()
    left, right = stereo_pair(rgb, depth, strength=0.1)
    for view in (left, right):
        assert (view.max(axis=2) >= 60).all()
        # Each row is a pure shift of the input row: the lines stay 10 px apart (no stretching within a plane).
        bright = view[30, :, 0] > 200
        line_starts = np.flatnonzero(bright[1:] & ~bright[:-1])
        assert len(line_starts) >= 8 and (np.diff(line_starts) == 10).all()


def test_pixels_without_depth_move_with_the_far_plane():
    rgb, depth = scene()
    depth[BOTTOM:, :] = 0.0  # no depth under the square: treated as the far wall
    left, right = stereo_pair(rgb, depth, strength=STRENGTH)
    np.testing.assert_array_equal(right[BOTTOM:, SHIFT:], rgb[BOTTOM:, :-SHIFT])
    np.testing.assert_array_equal(left[BOTTOM:, :-SHIFT], rgb[BOTTOM:, SHIFT:])


def test_transparent_input_stays_out():
    rgb, depth = scene()
    alpha = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    alpha[TOP:BOTTOM, LEFT:RIGHT] = 255  # the near square
    alpha[BOTTOM + 10:, :20] = 255  # and a far block of wall; the rest is transparent
    rgb[alpha == 0] = (255, 0, 255)  # garbage colour under the transparent pixels
    depth[alpha == 0] = 0.0
    left, right = stereo_pair(rgb, depth, alpha, strength=STRENGTH, background=(255, 255, 255))
    for view in (left, right):
        assert not (view == (255, 0, 255)).all(axis=2).any()
        # The square moves rigidly and the gap it leaves is background, not a smear of the square.
        assert (view == SQUARE).all(axis=2).sum() == (BOTTOM - TOP) * (RIGHT - LEFT)
        assert (view[:BOTTOM + 10] == SQUARE).all(axis=2).any(axis=0).sum() == RIGHT - LEFT
        assert (view[:BOTTOM + 10] == (255, 255, 255)).all(axis=2).sum() == (BOTTOM + 10) * WIDTH - 400
    assert (left[BOTTOM + 10:, :20 - SHIFT, 2] == WALL_BLUE).all()  # the far block is still there, shifted


def test_anaglyph_takes_red_from_the_left_eye_and_cyan_from_the_right():
    rng = np.random.default_rng(3)
    left = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    right = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    picture = anaglyph(left, right)
    assert picture.shape == (10, 12, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[..., 0], left[..., 0])
    np.testing.assert_array_equal(picture[..., 1:], right[..., 1:])


def test_dubois_anaglyph_sends_each_eye_through_its_own_filter():
    white = np.full((4, 4, 3), 255, dtype=np.uint8)
    black = np.zeros_like(white)
    only_left = anaglyph(white, black, method="dubois")
    only_right = anaglyph(black, white, method="dubois")
    assert (only_left[..., 0] > 200).all() and (only_left[..., 1:] == 0).all()
    assert (only_right[..., 0] == 0).all() and (only_right[..., 1:] > 200).all()
    with pytest.raises(OptionError):
        anaglyph(white, black, method="green-magenta")


def test_side_by_side_puts_the_left_eye_on_the_left():
    left = np.zeros((6, 8, 3), dtype=np.uint8)
    right = np.full((6, 8, 3), 200, dtype=np.uint8)
    left[:, :, 0] = np.arange(8) * 10
    pair = side_by_side(left, right)
    assert pair.shape == (6, 16, 3)
    np.testing.assert_array_equal(pair[:, :8], left)
    np.testing.assert_array_equal(pair[:, 8:], right)
    half = side_by_side(left, right, half=True)
    assert half.shape == (6, 8, 3)
    np.testing.assert_array_equal(half[0, :4, 0], [5, 25, 45, 65])  # column pairs averaged
    assert (half[:, 4:] == 200).all()
    with pytest.raises(InputError):
        side_by_side(left, right[:, :7])


def test_nearness_uses_robust_percentiles_of_inverse_depth():
    depth = np.full((50, 50), 4.0, dtype=np.float32)
    depth[:25] = 1.0
    depth[0, 0] = 1e-6  # one wild near value must not squash everything else
    depth[0, 1] = np.nan
    t, flat = normalised_nearness(depth)
    assert not flat
    assert t[10, 10] == 1.0 and t[40, 40] == 0.0 and t[0, 1] == 0.0


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"rgb": np.zeros((4, 5, 3), np.uint8), "depth": np.ones((4, 6), np.float32)}, InputError),
        ({"rgb": np.zeros((4, 5), np.uint8), "depth": np.ones((4, 5), np.float32)}, InputError),
        ({"rgb": np.zeros((4, 5, 3), np.uint8), "depth": np.ones((4, 5), np.float32), "strength": 0.5}, OptionError),
        ({"rgb": np.zeros((4, 5, 3), np.uint8), "depth": np.ones((4, 5), np.float32), "convergence": 2}, OptionError),
        ({"rgb": np.zeros((4, 5, 3), np.uint8), "depth": np.ones((4, 5), np.float32),
          "alpha": np.ones((5, 5), np.uint8)}, InputError),
    ],
)
def test_bad_inputs_get_a_sentence(arguments, error):
    with pytest.raises(error) as raised:
        stereo_pair(**arguments)
    assert str(raised.value).endswith(".")


def test_write_png_is_atomic(tmp_path):
    rgb, depth = scene()
    pair = side_by_side(*stereo_pair(rgb, depth))
    target = tmp_path / "photo.sbs.png"
    write_png(target, pair)
    with Image.open(target) as image:
        np.testing.assert_array_equal(np.asarray(image), pair)
    with pytest.raises(OutputError):
        write_png(tmp_path / "missing" / "photo.anaglyph.png", pair)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.sbs.png"]


# The fast paths against the plain formulas they replace.

def nearest_filled_by_scanning(hole: np.ndarray) -> list[np.ndarray]:
    """[H, W] per direction (left, right, up, down): the position of the nearest non-hole pixel along the row or
    column, −1 or the length where there is none, found by a running maximum / minimum over the whole image."""
    height, width = hole.shape
    columns, rows = np.arange(width)[None, :], np.arange(height)[:, None]
    return [np.maximum.accumulate(np.where(hole, -1, columns), axis=1),
            np.minimum.accumulate(np.where(hole, width, columns)[:, ::-1], axis=1)[:, ::-1],
            np.maximum.accumulate(np.where(hole, -1, rows), axis=0),
            np.minimum.accumulate(np.where(hole, height, rows)[::-1], axis=0)[::-1]]


@pytest.mark.parametrize("height, width", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 5), (17, 31), (40, 300), (300, 7)])
def test_nearest_filled_pixels_come_from_the_runs_of_holes(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    for density in (0.05, 0.3, 0.7, 0.97, 1.0):
        hole = rng.random((height, width)) < density
        hole[rng.integers(0, height)] = True  # a whole row of holes, and a whole column
        hole[:, rng.integers(0, width)] = True
        holes = np.flatnonzero(hole)
        rows, columns = np.divmod(holes, width)
        found = stereo._nearest_filled(holes, rows, columns, (height, width))
        for direction, scanned in zip(found, nearest_filled_by_scanning(hole)):
            np.testing.assert_array_equal(direction, scanned[rows, columns])


def test_horizontal_resampling_is_the_bilinear_step_towards_the_side_on_the_same_layer():
    rng = np.random.default_rng(5)
    height, width = 23, 37
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    depth = np.where(rng.random((height, width)) < 0.3, 2.0, rng.uniform(8, 10, (height, width))).astype(np.float32)
    alpha = (rng.random((height, width)) < 0.9).astype(np.uint8)
    scene = stereo.prepare_scene(rgb, depth, alpha, background=(9, 99, 199))
    offset = rng.uniform(-0.5, 0.5, (height, width)).astype(np.float32)
    offset[:, ::5] = 0.0
    got = stereo._resample_along_row(scene, slice(0, height), offset)

    colour, order = np.moveaxis(scene.colour, 0, -1), scene.order
    columns = np.arange(width)
    side = np.clip(np.where(offset >= 0, columns + 1, columns - 1), 0, width - 1)
    side_colour = np.take_along_axis(colour, side[..., None], axis=1)
    same = np.abs(np.take_along_axis(order, side, axis=1) - order) <= stereo.LAYER_TOLERANCE
    weight = np.where(same, np.abs(offset), np.float32(0))
    expected = colour + (side_colour - colour) * weight[..., None]  # (1 − w)·own + w·side
    np.testing.assert_array_equal(np.moveaxis(got, 0, -1), expected)


def test_block_by_block_warping_does_not_depend_on_the_block_size(monkeypatch):
    rng = np.random.default_rng(11)
    rgb = rng.integers(0, 256, size=(31, 45, 3), dtype=np.uint8)
    depth = rng.uniform(1, 10, size=(31, 45)).astype(np.float32)
    scene = stereo.prepare_scene(rgb, depth)
    shifts = [(4.0, 0.0), (-7.5, 0.0), (3.0, -2.5)]
    whole = [stereo.render_view(scene, *shift) for shift in shifts]
    monkeypatch.setattr(stereo, "_BLOCK_PIXELS", 100)  # two rows per block, the last block short
    for shift, expected in zip(shifts, whole):
        np.testing.assert_array_equal(stereo.render_view(scene, *shift), expected)


def test_dubois_tables_stay_within_one_level_of_the_srgb_formulas():
    every_value = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(stereo._LINEAR, stereo._to_linear(every_value))
    rng = np.random.default_rng(2)
    linear = np.concatenate([np.linspace(0, 1, 1 << 18, dtype=np.float32), rng.random(1 << 16, dtype=np.float32),
                             np.float32([0.0031308, 0.0031309, 1.0])])
    difference = np.abs(stereo._encode_srgb(linear).astype(int) - stereo._to_srgb(linear))
    assert difference.max() <= 1 and np.count_nonzero(difference) < 0.01 * linear.size
    left = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    right = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    mixed = stereo._to_linear(left) @ stereo._DUBOIS_LEFT.T + stereo._to_linear(right) @ stereo._DUBOIS_RIGHT.T
    formula = stereo._to_srgb(np.clip(mixed, 0.0, 1.0))
    assert np.abs(anaglyph(left, right, method="dubois").astype(int) - formula).max() <= 1

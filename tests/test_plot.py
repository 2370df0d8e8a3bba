import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bioviz import plot
from bioviz.stimuli import filters, gabor, gratings
from bioviz.tuning import Tuning, pinwheel_density, random_orientation_map, tuning_statistics


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_filter_grid_one_tile_per_filter_with_a_symmetric_shared_scale():
    weights = filters(6, 7) * torch.tensor([1.0, 1, 1, 1, 1, 3.0]).reshape(-1, 1, 1, 1)
    fig = plot.filter_grid(weights, ncols=4)
    assert isinstance(fig, Figure)
    tiles = image_axes(fig)
    assert len(tiles) == 6 and len(fig.axes) == 6 + 1  # six filters and the colour bar
    limits = {tuple(ax.images[0].get_clim()) for ax in tiles}
    vmax = float(weights.abs().max())
    assert limits == {(-vmax, vmax)}
    per_tile = plot.filter_grid(weights, scale="tile")
    assert len(per_tile.axes) == 6  # no colour bar when each tile has its own range
    with pytest.raises(ValueError, match="channel=c"):
        plot.filter_grid(torch.randn(4, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\[N, H, W\] or \[N, C, H, W\]"):
        plot.filter_grid(torch.randn(2, 2, 2, 2, 2))


def test_rf_grid_and_weight_grid():
    rfs = gabor((11, 11), [0, 45, 90], 0.15, 0, 2.0)
    assert len(image_axes(plot.rf_grid(rfs, positions=torch.zeros(3, 2)))) == 3
    fig = plot.weight_grid(torch.rand(12, 36), grid=(3, 4), in_shape=(6, 6))
    assert fig.mosaic.shape == (3 * 7 - 1, 4 * 7 - 1, 3)
    with pytest.raises(ValueError, match=r"in_shape=\(H, W\)"):
        plot.weight_grid(torch.rand(12, 36))
    with pytest.raises(ValueError, match="room for 6 units"):
        plot.weight_grid(torch.rand(12, 6, 6), grid=(2, 3))


def test_tile_images_layout_and_colours():
    x = torch.zeros(5, 4, 3)
    x[1] = 1.0
    x[2] = -1.0
    out = plot.tile_images(x, ncols=3, pad=1)
    assert out.shape == (2 * 5 - 1, 3 * 4 - 1, 3)
    bwr = matplotlib.colormaps["bwr"]
    np.testing.assert_allclose(out[0, 0], bwr(0.5)[:3], atol=1e-6)  # 0 -> white
    np.testing.assert_allclose(out[0, 4], bwr(1.0)[:3], atol=1e-6)  # +max -> red
    np.testing.assert_allclose(out[0, 8], bwr(0.0)[:3], atol=1e-6)  # -max -> blue
    np.testing.assert_allclose(out[4, 0], (0.55, 0.55, 0.55), atol=1e-6)  # padding
    colour = torch.zeros(2, 3, 2, 2)
    colour[0, 0] = 2.0  # a red filter
    colour[1, 2] = -2.0  # a filter that dislikes blue
    out = plot.tile_images(colour, ncols=2)
    np.testing.assert_allclose(out[0, 0], [1.0, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[0, 3], [0.5, 0.5, 0.0], atol=1e-6)


def test_activation_panel_has_stimulus_and_channel_columns():
    stimuli = gratings([0, 90], res=0.025)
    acts = torch.randn(2, 6, 12, 16)
    fig = plot.activation_panel(stimuli, acts, channels=[0, 2, 5])
    assert len(image_axes(fig)) == 2 * 4 and len(fig.axes) == 2 * 4 + 1  # + colour bar
    with pytest.raises(ValueError, match="N = 2 stimuli"):
        plot.activation_panel(stimuli, acts[:1])


def test_tuning_curves_one_panel_per_unit():
    ori = torch.arange(8) * 22.5
    curves = torch.rand(5, 8)
    tuning = Tuning(orientations=ori, responses=curves, frequency=torch.full((5,), 0.1),
                    **tuning_statistics(curves, ori))
    fig = plot.tuning_curves(tuning, ncols=2)
    assert len([ax for ax in fig.axes if ax.lines]) == 5
    assert len(plot.tuning_curves(tuning, units=[1, 3]).axes) == 2
    with pytest.raises(ValueError, match="index the 5 units"):
        plot.tuning_curves(tuning, units=[7])
    image = plot.tuning_image(tuning, cell=(2, 3))
    assert image.shape == (5 * 2, 8 * 3, 3)
    first = int(torch.argmin(tuning.preferred))  # rows are sorted by preferred orientation
    peak = int(torch.argmax(curves[first]))
    np.testing.assert_allclose(image[0, peak * 3], matplotlib.colormaps["viridis"](1.0)[:3], atol=1e-6)


def test_orientation_map_colours():
    pref = torch.tensor([[0.0, 60.0], [120.0, 179.9]])
    rgb = plot.orientation_map_rgb(pref, torch.tensor([[1.0, 1.0], [0.5, 0.0]]))
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0], atol=1e-6)  # 0 deg: red
    np.testing.assert_allclose(rgb[0, 1], [0, 1, 0], atol=1e-6)  # 60 deg: green
    np.testing.assert_allclose(rgb[1, 0], [0, 0, 0.5], atol=1e-6)  # 120 deg: blue, half as bright
    np.testing.assert_allclose(rgb[1, 1], [0, 0, 0], atol=1e-6)  # unselective: black
    truth = random_orientation_map((48, 48), 12, seed=0)
    pinwheels = pinwheel_density(truth.preference, periodic=True)
    fig = plot.orientation_map(truth.preference, pinwheels=pinwheels)
    assert len(image_axes(fig)) == 1 and len(fig.axes) == 2  # the map and its colour key
    assert pinwheels.count > 10 and f"{pinwheels.count} pinwheels" in fig.axes[0].get_title()


def test_figures_leave_no_pyplot_state_behind():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot.filter_grid(filters(6, 7))
    plot.orientation_map(torch.rand(8, 8) * 180)
    assert plt.get_fignums() == before  # nothing registered with pyplot: no leaks, nothing for plt.show to pop up

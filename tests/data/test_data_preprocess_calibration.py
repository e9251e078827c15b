"""Preprocess (the pixels every stage and the device runtime see) and the calibration set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeresnext.data.calibration import README, balanced_indices, write_calibration_set
from edgeresnext.data.folder import list_images, scan_image_folder
from edgeresnext.data.preprocess import Preprocess
from edgeresnext.errors import ConfigError, DataError


def test_normalize_is_scale_then_mean_std_in_chw():
    pre = Preprocess(channels="RGB", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    out = pre.image_to_array(pixels)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(out[1], -1.0)  # (0 - 0.25) / 0.25
    np.testing.assert_allclose(out[2], 0.0)


def test_resize_shorter_side_then_center_crop():
    image = Image.fromarray(np.arange(40 * 80, dtype=np.uint32).reshape(40, 80).astype(np.uint8))
    pre = Preprocess(channels="L", resize=20, crop=16, mean=(0.0,), std=(1.0,))
    assert pre.geometry(image).size == (16, 16)
    assert pre.image_to_array(image).shape == (1, 16, 16)
    with pytest.raises(DataError, match=r"smaller than the crop 64; set preprocess\.resize"):
        Preprocess(channels="L", crop=64, mean=(0.0,), std=(1.0,)).image_to_array(np.zeros((8, 8), np.uint8))


def test_modes_are_converted_predictably():
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))  # fully transparent white
    out = Preprocess(channels="RGB", mean=(0, 0, 0), std=(1, 1, 1)).image_to_array(rgba)
    np.testing.assert_allclose(out, 0.0)  # composited on black, like training images without alpha
    gray = Preprocess(channels="L", mean=(0.0,), std=(1.0,)).image_to_array(Image.new("RGB", (4, 4), (255, 0, 0)))
    assert gray.shape == (1, 4, 4) and 0.25 < gray.mean() < 0.35  # ITU-R 601 luma of pure red


def test_preprocess_round_trips_and_rejects_bad_values():
    pre = Preprocess(channels="L", resize=32, crop=28, mean=(0.3,), std=(0.4,))
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ConfigError, match="channels='BGR'"):
        Preprocess(channels="BGR")
    with pytest.raises(ConfigError, match="need 1 values for channels='L'"):
        Preprocess(channels="L")
    with pytest.raises(ConfigError, match="std must be positive"):
        Preprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match=r"preprocess\.crop=-3"):
        Preprocess(crop=-3)
    with pytest.raises(ConfigError, match="unknown key 'size'"):
        Preprocess.from_dict({"size": 3})
    # Every error from a dict names where the dict came from (a checkpoint, a manifest, a folder's JSON).
    with pytest.raises(ConfigError, match=r"^model\.pt: preprocess: preprocess\.channels='\\x00GB'; expected one of"):
        Preprocess.from_dict({"channels": "\x00GB"}, "model.pt: preprocess")
    with pytest.raises(ConfigError, match=r"^m\.json: preprocess\.channels=\['R'\]"):
        Preprocess.from_dict({"channels": ["R"]}, "m.json")
    with pytest.raises(ConfigError, match=r"^m\.json: mean=\['a', 1\]; expected a list of numbers"):
        Preprocess.from_dict({"mean": ["a", 1]}, "m.json")
    with pytest.raises(ConfigError, match=r"^m\.json: std=5; expected a list of numbers"):
        Preprocess.from_dict({"std": 5}, "m.json")
    with pytest.raises(DataError, match="uint8 pixels, got float64"):
        Preprocess().image_to_array(np.zeros((4, 4, 3)))


def test_balanced_indices_are_balanced_seeded_and_checked():
    labels = np.repeat(np.arange(10), 50)
    chosen = balanced_indices(labels, 105, seed=3)
    counts = np.bincount(labels[chosen])
    assert len(set(chosen.tolist())) == 105 and counts.max() - counts.min() == 1
    np.testing.assert_array_equal(chosen, balanced_indices(labels, 105, seed=3))
    assert not np.array_equal(chosen, balanced_indices(labels, 105, seed=4))
    with pytest.raises(DataError, match="exceeds the 500 images"):
        balanced_indices(labels, 501)
    with pytest.raises(DataError, match="class 1 has 1 images, 2 needed"):
        balanced_indices(np.array([0, 0, 0, 0, 1]), 4)


def test_calibration_folder_is_balanced_reproducible_and_documented(calib_dir, tmp_path):
    folder = scan_image_folder(calib_dir)
    assert len(folder) == 100 and np.bincount(folder.labels).tolist() == [10] * 10
    assert (calib_dir / "README.md").read_text() == README
    again = write_calibration_set(tmp_path / "calib", count=100, seed=0)
    assert again.count == 100 and again.per_class == 10
    first = [p.read_bytes() for p in list_images(calib_dir)]
    second = [p.read_bytes() for p in list_images(again.folder)]
    assert first == second
    with Image.open(list_images(calib_dir)[0]) as image:
        assert image.mode == "L" and image.size == (28, 28)


def test_calibration_rewrite_replaces_old_images_and_failure_leaves_folder_alone(tmp_path):
    out = tmp_path / "calib"
    write_calibration_set(out, count=20, seed=0)
    (out / "stale.png").write_bytes(b"x")  # not written by us: possibly the user's, so never deleted (issue 30)
    with pytest.raises(DataError, match=r"holds 1 image\(s\) that `edgeresnext data` did not write \(first: stale"):
        write_calibration_set(out, count=10, seed=1)
    assert (out / "stale.png").read_bytes() == b"x" and len(list_images(out)) == 21
    (out / "stale.png").unlink()
    write_calibration_set(out, count=10, seed=1)
    assert len(list_images(out)) == 10
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(DataError):
        write_calibration_set(out, dataset=str(tmp_path / "no-such-folder"), count=10)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())

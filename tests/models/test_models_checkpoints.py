"""Checkpoints: our formats round-trip, torchvision-style state dicts load, nothing is ever unpickled."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from bundle_helpers import tiny_meta

from edgeresnext.errors import CheckpointError
from edgeresnext.models import ModelMeta, create, load_checkpoint, read_checkpoint, save_checkpoint

ARCH = "resnext11_4x8d"


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create(ARCH, num_classes=10, in_channels=1)
    # Non-trivial BN statistics and last-BN weights, so a lost buffer would change the logits.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    return tiny_meta(metrics={"test_top1": 0.5})


def _same_logits(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_our_checkpoint_round_trips_with_metadata(tmp_path, tiny_model, meta, suffix):
    path = save_checkpoint(tmp_path / f"model{suffix}", tiny_model, meta)
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.meta == meta
    _same_logits(tiny_model, loaded)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_training_state_only_goes_into_pt(tmp_path, tiny_model, meta):
    save_checkpoint(tmp_path / "last.pt", tiny_model, meta, training={"epoch": 3})
    assert read_checkpoint(tmp_path / "last.pt").training == {"epoch": 3}
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint(tmp_path / "last.safetensors", tiny_model, meta, training={"epoch": 3})
    assert not (tmp_path / "last.safetensors").exists()


@pytest.mark.parametrize("wrap", ["bare", "module_prefix", "state_dict_key"])
def test_bare_torchvision_style_state_dict_loads_with_arch(tmp_path, tiny_model, wrap):
    state = tiny_model.state_dict()
    if wrap == "module_prefix":  # what DataParallel / DDP save
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "state_dict_key":
        state = {"state_dict": state}
    torch.save(state, tmp_path / "weights.pth")
    loaded = load_checkpoint(tmp_path / "weights.pth", arch=ARCH)
    assert loaded.meta.arch == ARCH and loaded.meta.num_classes == 10 and loaded.meta.in_channels == 1
    _same_logits(tiny_model, loaded)


def test_bare_safetensors_loads_with_arch(tmp_path, tiny_model):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    _same_logits(tiny_model, load_checkpoint(tmp_path / "w.safetensors", arch=ARCH))


def test_bare_state_dict_without_arch_names_the_choices(tmp_path, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match=r"weights.pth: a bare state dict.*pass arch=.*resnext50_32x4d"):
        load_checkpoint(tmp_path / "weights.pth")


class _RunsCommand:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, tiny_model, container):
    marker = tmp_path / "pwned"
    payload = {"state_dict": tiny_model.state_dict(), "hook": _RunsCommand(f"touch {marker}")}
    path = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"evil.pt: refused.*never unpickles"):
        load_checkpoint(path, arch=ARCH)
    assert not marker.exists(), "loading the checkpoint executed its pickle"


def test_wrong_num_classes_is_named(tmp_path, tiny_model, meta):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model, meta)
    with pytest.raises(
        CheckpointError,
        match=r"model.safetensors: num_classes=5 was requested but the checkpoint "
        r"has num_classes=10",
    ):
        load_checkpoint(path, num_classes=5)
    torch.save(tiny_model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"in_channels=3 was requested but the checkpoint has in_channels=1"):
        load_checkpoint(tmp_path / "bare.pth", arch=ARCH, in_channels=3)


def test_shape_mismatch_names_key_and_hint(tmp_path, tiny_model, meta):
    path = save_checkpoint(tmp_path / "model.pt", tiny_model, meta)
    with pytest.raises(CheckpointError, match=r"checkpoint is 'resnext11_4x8d', not the requested 'resnext20_4x8d'"):
        load_checkpoint(path, arch="resnext20_4x8d")
    # Metadata that disagrees with the weights (a hand-edited or mis-saved checkpoint).
    five_classes = create(ARCH, num_classes=5, in_channels=1)
    path = save_checkpoint(tmp_path / "lying.safetensors", five_classes, meta)
    with pytest.raises(
        CheckpointError,
        match=r"lying.safetensors: fc.weight has shape \(5, 256\), resnext11_4x8d "
        r"expects \(10, 256\) \(the checkpoint has num_classes=5\)",
    ):
        load_checkpoint(path)


def test_key_mismatch_lists_first_missing_and_unexpected(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    del state["layer2.0.conv1.weight"]
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "partial.pth", arch=ARCH)
    message = str(info.value)
    assert "partial.pth" in message
    assert "1 missing (first: layer2.0.conv1.weight)" in message
    assert "1 unexpected (first: head.weight)" in message


def test_a_different_arch_lists_many_keys_but_only_the_first_five(tmp_path, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "small.pth")
    with pytest.raises(CheckpointError, match=r"missing \(first: ([^,]+, ){4}[^,;]+\)") as info:
        load_checkpoint(tmp_path / "small.pth", arch="resnext20_4x8d")
    assert "layer1.1." in str(info.value)


@pytest.mark.parametrize("damage", ["empty", "truncated_zip", "garbage", "truncated_safetensors", "missing"])
def test_corrupt_files_give_one_clear_error(tmp_path, tiny_model, meta, damage):
    if damage == "truncated_zip":
        good = save_checkpoint(tmp_path / "good.pt", tiny_model, meta).read_bytes()
        path = tmp_path / "model.pt"
        path.write_bytes(good[: len(good) // 2])
    elif damage == "truncated_safetensors":
        good = save_checkpoint(tmp_path / "good.safetensors", tiny_model, meta).read_bytes()
        path = tmp_path / "model.safetensors"
        path.write_bytes(good[: len(good) // 2])
    else:
        path = tmp_path / "model.pt"
        if damage == "empty":
            path.write_bytes(b"")
        elif damage == "garbage":
            path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_non_tensor_payload_is_not_a_state_dict(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt: not a state dict \(key 'note' is not a tensor\)"):
        load_checkpoint(tmp_path / "odd.pt", arch=ARCH)


def test_damaged_preprocess_metadata_names_the_checkpoint(tmp_path, tiny_model, meta):
    """Found by tests/test_fuzz.py: one flipped byte in a .pt's preprocess channels gave an error without the file."""
    path = save_checkpoint(tmp_path / "model.pt", tiny_model, meta)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["preprocess"]["channels"] = "\x00GB"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"model\.pt: preprocess: preprocess\.channels='\\x00GB'; expected"):
        read_checkpoint(path)


def test_safetensors_checkpoint_is_a_plain_zip_free_file(tmp_path, tiny_model, meta):
    path = save_checkpoint(tmp_path / "model.safetensors", tiny_model, meta)
    assert not zipfile.is_zipfile(path)  # nothing pickled: safetensors is a header + raw tensors


def test_shipped_model_classifies_fashion_mnist(shipped_model, fmnist_test, fmnist_batch):
    assert shipped_model.meta.arch == "resnext20_4x8d" and not shipped_model.training
    assert shipped_model.meta.preprocess.channels == "L"
    with torch.inference_mode():
        predictions = shipped_model(torch.from_numpy(fmnist_batch)).argmax(1).numpy()
    assert (predictions == fmnist_test.labels[:64]).mean() >= 0.8  # 60 of 64 here; none closer than 0.23 to a tie


def test_shipped_model_reaches_its_recorded_accuracy_on_the_whole_test_set(shipped_model):
    """All 10,000 Fashion-MNIST test images: the file's recorded top-1 is what the weights give, and >= 92.5 %."""
    from edgeresnext.data import load_dataset

    data = load_dataset("fashion-mnist", split="test")
    inputs = np.stack([data.preprocess.image_to_array(image) for image in data.images])
    with torch.inference_mode():
        predictions = np.concatenate(
            [shipped_model(torch.from_numpy(inputs[i : i + 500])).argmax(1).numpy() for i in range(0, len(inputs), 500)]
        )
    top1 = float((predictions == data.labels).mean())
    assert len(data.labels) == 10_000
    # The exact count (recorded to 4 places): the smallest top-2 gap of the 10,000 images is 5.7e-4, 30x the largest
    # float32 difference between kernels (1.7e-5, ONNX Runtime vs PyTorch), so no CPU's kernels can flip one.
    # BF16 would (9 images here).
    assert abs(top1 - shipped_model.meta.metrics["test_top1"]) < 1e-4, (top1, shipped_model.meta.metrics)
    assert top1 >= 0.925, top1


def test_state_dict_without_batchnorm_counters_still_loads(tmp_path, tiny_model):
    """Checkpoints from before PyTorch 0.4.1 have no num_batches_tracked buffers."""
    state = {k: v for k, v in tiny_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    _same_logits(tiny_model, load_checkpoint(tmp_path / "old.pth", arch=ARCH))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_saved_checkpoint_is_readable_like_any_file_the_user_writes(tmp_path, tiny_model, meta, umask, mode):
    """safetensors creates its file 0600; the atomic writer widens it to what the umask allows, no further."""
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "model.safetensors", tiny_model, meta)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode

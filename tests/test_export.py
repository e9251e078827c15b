"""FP32 ONNX export: names, dynamic batch, checker, and parity with PyTorch on real images."""

from __future__ import annotations

import onnx
import pytest
import torch

from edgeresnext.errors import ExportError
from edgeresnext.export import assert_parity, check_onnx, max_abs_error_vs_torch, onnx_from_torch, onnx_runner
from edgeresnext.models.resnext import ResNeXt, ResNeXtConfig

TINY = ResNeXtConfig(layers=(1, 1, 1), groups=4, width_per_group=32, stem="cifar", planes=(8, 16, 32), stem_width=16)


@pytest.fixture(scope="module")
def model() -> ResNeXt:
    torch.manual_seed(0)
    return ResNeXt(TINY, num_classes=10, in_channels=1).eval()


def test_export_matches_pytorch_on_real_images(model, fmnist_batch, tmp_path):
    path = onnx_from_torch(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # Random-init logits up to 0.12: float32 reordering gives 6.7e-8 here; another model's weights give 0.18.
    assert max_abs_error_vs_torch(model, path, fmnist_batch) < 1e-4
    assert onnx_runner(path)(fmnist_batch[:3]).shape == (3, 10)  # dynamic batch really is dynamic


def test_static_batch_and_opset(model, tmp_path):
    path = onnx_from_torch(model, tmp_path / "m.onnx", input_shape=(1, 28, 28), dynamic_batch=False, opset=18)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18
    with pytest.raises(ExportError, match="opset 11"):
        onnx_from_torch(model, tmp_path / "old.onnx", input_shape=(1, 28, 28), opset=11)


def test_parity_fails_when_the_onnx_is_not_the_model(model, fmnist_batch, tmp_path):
    path = onnx_from_torch(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    other = ResNeXt(TINY, num_classes=10, in_channels=1).eval()  # different random weights
    with pytest.raises(ExportError, match="differ from PyTorch"):
        assert_parity(other, path, fmnist_batch[:8])
    assert assert_parity(model, path, fmnist_batch[:8]) < 1e-4


def test_check_onnx_names_the_file_and_problem(model, tmp_path):
    path = onnx_from_torch(model, tmp_path / "m.onnx", input_shape=(1, 28, 28))
    proto = onnx.load(str(path))
    proto.graph.output[0].name = "scores"
    proto.graph.node[-1].output[0] = "scores"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(proto, str(renamed))
    with pytest.raises(ExportError, match=r"renamed\.onnx.*'logits'"):
        check_onnx(renamed)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match=r"broken\.onnx"):
        check_onnx(broken)


def test_failed_export_leaves_no_file(tmp_path):
    with pytest.raises(ExportError):
        onnx_from_torch(torch.nn.Conv2d(3, 4, 3), tmp_path / "m.onnx", input_shape=(5, 8, 8))
    assert not list(tmp_path.iterdir())


def test_layers_with_identical_weights_each_get_their_own_weight_tensor(tmp_path):
    """The exporter writes identical weights once and the second as Identity(first) (an untrained model's
    zero-initialised layers); quantizers would then treat that weight as an activation. Each layer gets its own."""
    import onnx
    import torch

    class Twins(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
            with torch.no_grad():
                self.b.weight.copy_(self.a.weight)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).mean(dim=(2, 3))

    path = onnx_from_torch(Twins().eval(), tmp_path / "twins.onnx", input_shape=(4, 8, 8))
    graph = onnx.load(str(path)).graph
    initializers = {t.name for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.input[1] in initializers for n in convs)
    assert convs[0].input[1] != convs[1].input[1]

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from dhr.errors import CheckpointError, ShapeError
from dhr.models.farl import FARL_CELEBM_CLASSES, FaRLNetwork, load_farl_parser, sha256_file

# Building the stand-in archive needs torch.jit.script/save, deprecated upstream (the release is TorchScript).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")


class _TinyParser(nn.Module):
    """Same call signature as the released FaRL archive: crops -> (logits, features)."""

    def __init__(self, n_classes: int = 19) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, n_classes, 1)
        self.feat = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), self.feat(x)


@pytest.fixture()
def scripted(tmp_path):
    torch.manual_seed(0)
    module = _TinyParser().eval()
    path = tmp_path / "farl_tiny_jit.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    return module, path


def test_class_order_matches_reference():
    assert len(FARL_CELEBM_CLASSES) == 19
    ood = [FARL_CELEBM_CLASSES[i] for i in (0, 3, 16, 17, 18)]
    assert ood == ["background", "cloth", "hat", "earr", "neckl"]
    assert FARL_CELEBM_CLASSES[2] == "face" and FARL_CELEBM_CLASSES[14] == "hair"


def test_trust_model(scripted, tmp_path):
    _, path = scripted
    with pytest.raises(CheckpointError, match="without a digest"):
        load_farl_parser(path)
    with pytest.raises(CheckpointError, match="expected"):
        load_farl_parser(path, expected_sha256="0" * 64)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == digest
    assert isinstance(load_farl_parser(path, expected_sha256=digest.upper()), FaRLNetwork)
    assert isinstance(load_farl_parser(path, trust=True), FaRLNetwork)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_farl_parser(tmp_path / "missing.pt", trust=True)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_farl_parser(tmp_path / "junk.pt", trust=True)


def test_logits_shape_and_values(scripted):
    module, path = scripted
    parser = load_farl_parser(path, trust=True)
    assert not any(p.requires_grad for p in parser.parameters())
    crops = torch.rand(1, 3, 448, 448)
    with torch.no_grad():
        logits = parser(crops)
        torch.testing.assert_close(logits, module(crops)[0])
    assert logits.shape == (1, 19, 448, 448)
    with pytest.raises(ShapeError):
        parser(torch.rand(1, 3, 256, 256))


def test_wrong_output_is_reported():
    parser = FaRLNetwork(_TinyParser(n_classes=11))  # e.g. the LaPa model
    with pytest.raises(ShapeError, match="celebm"):
        parser(torch.rand(1, 3, 448, 448))

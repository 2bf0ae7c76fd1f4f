"""Checkpoints are read without executing code, and must fit the model exactly."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advlab import zoo
from advlab.errors import AdvlabError
from advlab.zoo.checkpoint import read_state_dict
from advlab.zoo.digits import DigitsCNN


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - the classic pickle payload
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"conv.weight": _Exploit(marker)}))
    with pytest.raises(AdvlabError, match="refusing to load"):
        read_state_dict(path)
    assert not marker.exists()
    # also when saved through torch.save (zip format)
    torch.save({"w": _Exploit(marker)}, tmp_path / "evil2.pt")
    with pytest.raises(AdvlabError, match="refusing to load"):
        zoo.load("digits-cnn", weights=tmp_path / "evil2.pt")
    assert not marker.exists()


def test_keys_that_do_not_fit(tmp_path: Path) -> None:
    sd = DigitsCNN().state_dict()
    renamed = {("x." + k if i == 0 else k): v for i, (k, v) in enumerate(sd.items())}
    save_file({k: v.contiguous() for k, v in renamed.items()}, tmp_path / "renamed.safetensors")
    with pytest.raises(AdvlabError, match=r"does not fit the model: keys 1 missing .*1 unexpected"):
        zoo.load("digits-cnn", weights=tmp_path / "renamed.safetensors")
    wide = DigitsCNN(width=16).state_dict()
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(AdvlabError, match="of the wrong shape"):
        zoo.load("digits-cnn", weights=tmp_path / "wide.pth")


def test_files_that_are_not_state_dicts(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(AdvlabError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(64))
    with pytest.raises(AdvlabError, match="cannot read safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04" + os.urandom(60))
    with pytest.raises(AdvlabError):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(AdvlabError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.pth")


def test_round_trip_keeps_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = DigitsCNN()
    torch.save({"model": net.state_dict()}, tmp_path / "w.pth")
    model = zoo.load("digits-cnn", weights=tmp_path / "w.pth")
    loaded = model.net.state_dict()  # type: ignore[union-attr]
    for (k, a), b in zip(net.state_dict().items(), loaded.values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path: Path, bad: float) -> None:
    sd = {k: v.clone() for k, v in DigitsCNN().state_dict().items()}
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name].view(-1)[3] = bad
    save_file(sd, str(tmp_path / "bad.safetensors"))
    torch.save(sd, tmp_path / "bad.pt")
    for path in (tmp_path / "bad.safetensors", tmp_path / "bad.pt"):
        with pytest.raises(AdvlabError, match=f"NaN or infinite values in 1 of {len(sd)} tensors .*{name}"):
            zoo.load("digits-cnn", weights=path)

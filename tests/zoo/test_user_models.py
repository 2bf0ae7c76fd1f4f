"""A model file's facts: declared or not declared input size, channels from its first layer, class names from the
network, the module or the caller (one per output, else one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from advlab import zoo
from advlab.errors import AdvlabError

NET = """
import torch
from torch import nn
{module_level}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d({channels}, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
{attributes}
    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def build():
    return Net()
"""


def _file(tmp_path: Path, name: str, channels: int = 1, module_level: str = "", attributes: str = "") -> str:
    (tmp_path / f"{name}.py").write_text(
        NET.format(channels=channels, module_level=module_level, attributes=attributes)
    )
    return f"{tmp_path / name}.py:build"


def test_an_undeclared_size_is_the_datas(tmp_path: Path) -> None:
    spec = _file(tmp_path, "plain")
    info = zoo.info(spec)
    assert (info.input_size, info.size_declared, info.data_size, info.channels) == (224, False, None, 1)
    assert info.class_names == ["0", "1", "2"] and (info.named, info.data_classes) == (False, None)
    probed = zoo.info(spec, data_shape=(1, 32))
    assert (probed.input_size, probed.data_size) == (32, None)
    declared = zoo.info(spec, input_size=48)
    assert (declared.size_declared, declared.data_size) == (True, 48)
    attr = zoo.info(_file(tmp_path, "sized", attributes="        self.input_size = 20\n"))
    assert (attr.input_size, attr.data_size) == (20, 20)


def test_class_names_from_the_module_the_network_or_the_caller(tmp_path: Path) -> None:
    mod = zoo.info(_file(tmp_path, "mod", module_level="class_names = ['a', 'b', 'c']"))
    assert mod.class_names == mod.data_classes == ["a", "b", "c"]
    net = zoo.info(_file(tmp_path, "net", attributes="        self.class_names = ['x', 'y', 'z']\n"))
    assert net.class_names == ["x", "y", "z"]
    assert zoo.load(_file(tmp_path, "given"), class_names=["p", "q", "r"]).info.class_names == ["p", "q", "r"]
    with pytest.raises(AdvlabError, match="3 outputs but 2 class names"):
        zoo.info(_file(tmp_path, "few", module_level="class_names = ['a', 'b']"))
    with pytest.raises(AdvlabError, match="10 outputs but 2 class names"):
        zoo.load("digits-cnn", class_names=["a", "b"])
    with pytest.raises(AdvlabError, match="'a' is given twice"):
        zoo.info(_file(tmp_path, "twice"), class_names=["a", "b", "a"])

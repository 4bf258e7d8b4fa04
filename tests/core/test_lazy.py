"""Package exports load on first use and unknown names fail like normal attributes."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_is_light():
    code = ("import sys, tipsv2_sdk, tipsv2_sdk.index; "
            "print(int('torch' in sys.modules), int('faiss' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]


@pytest.mark.parametrize("package", ["tipsv2_sdk", "tipsv2_sdk.index", "tipsv2_sdk.connectors"])
def test_every_export_resolves_and_unknown_names_raise(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name

#!/usr/bin/env python3
"""Run the ``tipsv2`` command from a checkout: ``python cli.py ...`` == ``tipsv2 ...``.

When the package is not installed, the checkout's folders are mapped to their installed names
(connectors/ -> tipsv2_sdk.connectors, index/ -> tipsv2_sdk.index, pretrain/ -> tipsv2_sdk.pretrain).
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MAPPED = {"tipsv2_sdk.connectors": "connectors", "tipsv2_sdk.index": "index", "tipsv2_sdk.pretrain": "pretrain"}


def _map_checkout() -> None:
    sys.path.insert(0, str(ROOT))
    import tipsv2_sdk

    for name, folder in MAPPED.items():
        if importlib.util.find_spec(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        setattr(tipsv2_sdk, name.rsplit(".", 1)[1], module)
        spec.loader.exec_module(module)


if __name__ == "__main__":
    try:
        import tipsv2_sdk.index  # noqa: F401  (installed: nothing to map)
    except ImportError:
        _map_checkout()
    from tipsv2_sdk.cli.app import main

    main()

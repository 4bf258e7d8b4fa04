"""Package layout for setuptools.

The design keeps ``connectors/``, ``index/`` and ``pretrain/`` at the top of the checkout but
installs them as ``tipsv2_sdk.connectors``, ``tipsv2_sdk.index`` and ``tipsv2_sdk.pretrain``, so
nothing generic ("index", "pretrain") lands at the top of site-packages. Sub-packages are found
per folder so that adding one needs no edit here. Everything else lives in pyproject.toml.
"""
from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "tipsv2_sdk": "tipsv2_sdk",
    "tipsv2_sdk.connectors": "connectors",
    "tipsv2_sdk.index": "index",
    "tipsv2_sdk.pretrain": "pretrain",
}

packages = []
for package, folder in PACKAGE_ROOTS.items():
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=PACKAGE_ROOTS)

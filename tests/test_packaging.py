"""What the sdist and the wheel ship: the licence, the typing marker, the metadata.

Both are built once per run with hatchling's own build hooks (what ``python -m build``
calls), from the project's files: about half a second.
"""

from __future__ import annotations

import email
import email.message
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import trove_classifiers

from ccxt_breaker import _hook

ROOT = Path(__file__).parent.parent
LICENSE = "Copyright (c) 2026 the ccxt-breaker authors"
BUILD = """
import sys
import hatchling.build as backend
print(backend.build_sdist(sys.argv[1]))
print(backend.build_wheel(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built into a temporary directory."""
    out = tmp_path_factory.mktemp("dist")
    names = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    sdist, wheel = (out / name for name in names)
    return sdist, wheel


def test_wheel_ships_license_and_py_typed(built: tuple[Path, Path]) -> None:
    """The wheel holds the MIT licence under dist-info/licenses and the py.typed marker."""
    with zipfile.ZipFile(built[1]) as wheel:
        names = set(wheel.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert "ccxt_breaker/py.typed" in names
        assert f"{dist_info}/licenses/LICENSE" in names
        assert LICENSE in wheel.read(f"{dist_info}/licenses/LICENSE").decode()


def test_sdist_ships_license_and_py_typed(built: tuple[Path, Path]) -> None:
    """The sdist holds the MIT licence at its top and the py.typed marker."""
    with tarfile.open(built[0]) as sdist:
        names = set(sdist.getnames())
        top = next(iter(names)).split("/")[0]
        assert f"{top}/ccxt_breaker/py.typed" in names
        assert f"{top}/LICENSE" in names
        licence = sdist.extractfile(f"{top}/LICENSE")
        assert licence is not None
        assert LICENSE in licence.read().decode()


def metadata(wheel_path: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel_path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(wheel.read(name))


def test_metadata_names_licence_urls_classifiers_and_ccxt_range(built: tuple[Path, Path]) -> None:
    """The wheel's metadata names the SPDX licence and file, URLs, classifiers and ccxt range."""
    # valid classifiers: Python 3.11-3.13, Typed, the two topics; no License classifier,
    # which PEP 639 deprecates beside an SPDX expression
    meta = metadata(built[1])
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    repo = "https://github.com/ccxt-breaker/ccxt-breaker"
    assert meta.get_all("Project-URL") == [
        f"Homepage, {repo}",
        f"Repository, {repo}",
        f"Issues, {repo}/issues",
        f"Changelog, {repo}/blob/main/CHANGELOG.md",
    ]
    classifiers = meta.get_all("Classifier") or []
    assert set(classifiers) <= trove_classifiers.classifiers
    assert {
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Office/Business :: Financial :: Investment",
        "Topic :: Software Development :: Libraries",
        "Typing :: Typed",
    } <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")]
    oldest, below = _hook._CCXT_OLDEST, _hook._CCXT_BELOW
    assert f"ccxt<{below},>={oldest}" in (meta.get_all("Requires-Dist") or [])

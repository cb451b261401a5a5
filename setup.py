"""The wheel's data: recipes/, configs/ and overlays/ travel as khib_build/data/<name>.

Every folder below them is listed as a package of its own (setuptools' packages and
package-dir cannot be globbed in pyproject.toml), so that setuptools takes them as the
data they are instead of warning about importable-looking folders it would leave out.
"""

from pathlib import Path

from setuptools import find_packages, setup

CODE = find_packages(include=["khib_build", "khib_build.*"])  # every folder of the code
DATA = ("recipes", "configs", "overlays")


def data_packages() -> dict[str, str]:
    """khib_build.data.<top>.<sub…> -> its folder, for every folder below the data tops."""
    found = {}
    for top in DATA:
        for folder in [Path(top), *sorted(p for p in Path(top).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts:
                continue
            found[".".join(["khib_build.data", *folder.parts])] = folder.as_posix()
    return found


packages = data_packages()
setup(packages=[*CODE, *packages], package_dir={"khib_build": "khib_build", **packages},
      package_data={name: ["*"] for name in packages})

"""Print the lowest version of every dependency pyproject.toml declares, as pip constraints.

.ci/run installs with these (`pip install -c`), so the floors users are promised are the
versions the tests ran on: a floor nobody tested cannot stay in pyproject.toml.
"""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"])
for extra in project["optional-dependencies"].values():
    requirements += extra
floors = {}
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", requirement)
    if match:
        floors[match[1].lower()] = match[2]
for name, version in sorted(floors.items()):
    print(f"{name}=={version}")

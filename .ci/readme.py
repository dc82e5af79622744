"""Pull commands out of README.md for CI, so that CI runs exactly what the README shows.

python .ci/readme.py first-command README.md   # the first line of the first ```bash block, comment removed
python .ci/readme.py python-api README.md      # the first ```python block under '## Python API'
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def first_command(text: str) -> str:
    line = blocks(text, "bash")[0].strip().splitlines()[0]
    return re.sub(r"\s+#.*$", "", line).strip()


def python_api(text: str) -> str:
    section = text.split("\n## Python API", 1)[1]
    return blocks(section, "python")[0]


if __name__ == "__main__":
    what, path = sys.argv[1], Path(sys.argv[2])
    print({"first-command": first_command, "python-api": python_api}[what](path.read_text()))

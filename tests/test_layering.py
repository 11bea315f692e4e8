"""The package's layering, as the README's table "How the code is laid out" states it.

Each module sits on one floor and imports (``from .x import``, at module level or
inside a function) only modules on its own floor or below; imports under
``if TYPE_CHECKING:`` are for annotations and do not count.  Oracles: Python's own
``ast`` for the imports, the README for the floors (so the table cannot drift from
the code), and the file system for the module list (a new module must be placed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fastelf"


def _floors() -> dict[str, int]:
    """{module: floor number} from the README table (its first column is the floor)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("### How the code is laid out", 1)[1].split("\n\n")[2]
    floors: dict[str, int] = {}
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| floor")]
    for n, row in enumerate(rows):
        modules_cell = row.split("|")[2]
        for name in re.findall(r"`([^`]+)`", modules_cell):
            base = Path(name).name
            stems = ([p.stem for p in PACKAGE.glob(base)] if "*" in base
                     else [base.split(".")[0]])
            for stem in stems:
                if not base.endswith((".json", ".pyi", ".pxd")):    # data and stubs
                    floors[stem] = n
    return floors


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def test_every_module_has_a_floor():
    floors = _floors()
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {"_elf", "_deflateblocks"}
    assert modules - set(floors) == set(), "place new modules in README's layout table"
    assert set(floors) - modules == set(), "the README's table names modules that are gone"


def test_imports_go_only_down():
    floors = _floors()
    upward = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        typing_only = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.level == 1):
                continue
            if node.lineno in typing_only:
                continue
            targets = [node.module] if node.module else [a.name for a in node.names]
            for target in targets:
                top = target.split(".")[0]
                if top in floors and floors[top] > floors[path.stem]:
                    upward.append(f"{path.name}:{node.lineno} imports {top}")
    assert upward == []


def test_the_core_imports_nothing_of_the_package():
    """The Cython core knows ELF and nothing else: no wheel, policy or package import;
    the deflate-stream walker beside it likewise knows deflate only."""
    for name in ("_elf.pyx", "_elf.pxd", "_deflateblocks.pyx"):
        src = (ROOT / "cext" / "fastelf" / name).read_text()
        assert not re.search(r"^\s*(from|import)\s+(fastelf|\.)", src, re.MULTILINE), name

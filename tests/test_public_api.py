"""The public API: every name in headlab.__all__ resolves to the object of its home module; `import headlab`
stays cheap; and no module of the package imports from the top package (so the API can never form a circle)."""

import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import grimp
import pytest

import headlab


@pytest.mark.parametrize("name", [n for n in headlab.__all__ if n != "__version__"])
def test_every_public_name_is_its_home_modules_object(name):
    module, attr = headlab._API[name]
    assert getattr(headlab, name) is getattr(import_module(module), attr)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        headlab.load_modle  # noqa: B018


def test_dir_lists_the_api():
    assert set(headlab.__all__) <= set(dir(headlab))


def test_import_headlab_does_not_load_torch():
    code = "import sys, headlab; print('torch' in sys.modules, headlab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", headlab.__version__]


def test_no_module_imports_the_top_package():
    graph = grimp.build_graph("headlab")
    importers = sorted(graph.find_modules_that_directly_import("headlab"))
    assert importers == [], importers


DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```(?:python)?\n(.*?)```", text, flags=re.S)


def test_api_page_lists_every_public_name_once():
    listed = re.findall(r"`(\w+)`", "".join(line for line in DOC.read_text().splitlines(True)
                                            if line.startswith("| ") and not line.startswith("| group")))
    names = [n for n in listed if not n.startswith("headlab")]
    assert sorted(names) == sorted(n for n in headlab.__all__ if n != "__version__")


def test_api_page_example_prints_what_the_page_shows(tmp_path):
    code, shown = _blocks(DOC.read_text())[:2]
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out == shown

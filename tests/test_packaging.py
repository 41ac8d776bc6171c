"""What setup.py claims about versions matches what CI installs to test it."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _install_requires():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [ast.literal_eval(element) for element in node.value.elts]
    raise AssertionError("setup.py has no install_requires")


def _floors():
    floors = {}
    for requirement in _install_requires():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?.*", requirement)
        assert match, requirement
        floors[match.group(1).lower().replace("_", "-")] = match.group(2)
    return floors


def _oldest_pins():
    pins = {}
    for line in (ROOT / "tools" / "oldest-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_floor_is_pinned_in_the_oldest_venv_and_at_that_floor():
    floors, pins = _floors(), _oldest_pins()
    for name, floor in floors.items():
        if floor is None:
            continue
        assert name in pins, f"setup.py claims {name}>={floor}; pin it in tools/oldest-versions.txt"
        pinned = pins[name].split(".")
        assert pinned[:len(floor.split("."))] == floor.split("."), (
            f"{name}: setup.py's floor is {floor} but CI's oldest venv installs {pins[name]}; "
            "make them the same release")


def test_every_declared_dependency_has_a_floor():
    unfloored = [name for name, floor in _floors().items() if floor is None]
    assert not unfloored, f"no tested floor for {unfloored}"

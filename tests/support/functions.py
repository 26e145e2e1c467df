"""The Lambda functions' modules, loaded the way Lambda loads them. No I/O: unit tests may
import it."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

_LOAD_LOCK = threading.Lock()


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py the way Lambda does, under a unique module name."""
    module_name = f"_function_{name}_app"
    with _LOAD_LOCK:
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
        return module

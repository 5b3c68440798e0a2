"""docs/sdk-reference.md matches the code, and every public name of the SDK is documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gen_sdk_reference.py"


def test_the_reference_page_is_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_public_name_and_method_has_a_docstring() -> None:
    import interapp.host as host
    import interapp.host.blocking as blocking

    missing = []
    for name in host.__all__:
        obj = getattr(host, name)
        documentable = inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)
        if documentable and not (obj.__doc__ or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and obj.__module__.startswith("interapp.host"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or isinstance(
                        member, property | classmethod | staticmethod)):
                    continue
                fn = member.fget if isinstance(member, property) else getattr(
                    member, "__func__", member)
                if not (getattr(fn, "__doc__", "") or "").strip():
                    missing.append(f"{name}.{attr}")
    for attr, member in vars(blocking.BlockingHost).items():
        if not attr.startswith("_") and callable(member) and not (member.__doc__ or "").strip():
            missing.append(f"BlockingHost.{attr}")
    assert not missing, f"public names without a docstring: {missing}"

"""The committed configuration reference is what the schema generates (as test_lock.py checks
envs/ against the lock): docs/reference/configuration.md must read right on GitHub and in a
checkout, not only on the built site."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "docs" / "hooks" / "schema_reference.py"


def schema_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("schema_reference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as mkdocs loads a hook: its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_configuration_reference_is_what_the_schema_generates() -> None:
    hook = schema_reference()
    committed = (ROOT / hook.PAGE).read_text(encoding="utf-8")
    generated = hook.generate_page(committed, hook.load_schema(ROOT / hook.SCHEMA))
    assert committed == generated, (
        f"{hook.PAGE} differs from what {hook.SCHEMA} generates: run `{hook.COMMAND}` and commit it"
    )
    assert committed.startswith(hook.HEADER)  # says how to regenerate it
    assert hook.COMMAND in hook.HEADER
    assert "| `train.algorithm.algorithm` |" in committed


def test_the_script_rewrites_a_stale_page_atomically_and_keeps_the_hand_written_text(
    tmp_path: Path,
) -> None:
    hook = schema_reference()
    schema = ROOT / hook.SCHEMA
    page = tmp_path / "configuration.md"
    page.write_text(f"# Configuration\n\nBy hand.\n\n{hook.BEGIN}\nold tables\n{hook.END}\n")
    page.chmod(0o644)

    check = [sys.executable, str(SCRIPT), "--page", str(page), "--schema", str(schema)]
    stale = subprocess.run([*check, "--check"], capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert hook.COMMAND in stale.stderr
    subprocess.run(check, check=True, capture_output=True)

    written = page.read_text(encoding="utf-8")
    assert written == hook.generate_page(written, hook.load_schema(schema))
    assert written.startswith(f"{hook.HEADER}# Configuration\n\nBy hand.\n\n{hook.BEGIN}\n")
    assert "old tables" not in written
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configuration.md"]  # no temporary left
    assert subprocess.run([*check, "--check"], capture_output=True, check=False).returncode == 0
    assert not hook.write_page(page, schema)  # current: not rewritten

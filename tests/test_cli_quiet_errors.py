"""--quiet silences mcts-cot's console but not its error line (cli.user_errors prints on its own console)."""

from __future__ import annotations

from typer.testing import CliRunner

from cli import app


def test_quiet_still_prints_errors(tmp_path):
    result = CliRunner().invoke(app, ["--quiet", "export-pairs", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "no trees" in result.stderr

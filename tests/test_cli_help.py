"""Every sub-command's --help answers without importing torch (so it is fast), except train, whose
adapter kinds declare their own flags in their (torch) modules."""

import subprocess
import sys

import pytest

from pano360.cli.main import SUBCOMMANDS

TORCH_FREE = [name for name in SUBCOMMANDS if name != "train"]


@pytest.mark.parametrize("command", TORCH_FREE)
def test_help_imports_no_torch(command):
    code = ("import sys\nfrom pano360.cli.main import main\ntry:\n    main([%r, '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('TORCH', 'torch' in sys.modules)" % command)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: pano360 " + command in result.stdout
    assert result.stdout.strip().endswith("TORCH False"), result.stdout[-300:]

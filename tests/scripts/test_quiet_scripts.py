"""The scripts a user runs beside train.py are as quiet: no TensorFlow start-up lines on stderr."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # this checkout's packages
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_list_presets_and_export_print_no_tensorflow_logs(tmp_path):
    listed = run(tmp_path, str(ROOT / "scripts" / "list_presets.py"), "gpt2_tiny")
    assert listed.returncode == 0 and listed.stdout.startswith("gpt2_tiny_en ") and listed.stderr == "", listed.stderr
    exported = run(tmp_path, str(ROOT / "scripts" / "export.py"), "gpt2_tiny_en", "--to", "preset", "out")
    assert exported.returncode == 0 and "wrote preset" in exported.stdout and exported.stderr == "", exported.stderr

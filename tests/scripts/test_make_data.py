"""The bundled datasets are what their scripts make: re-running them changes no byte."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import make_bundled_data  # noqa: E402
import make_chat_data  # noqa: E402


def test_bundled_sentiment_and_chat_files_are_reproduced_by_their_scripts():
    made = {"sentiment.jsonl": make_bundled_data.rows(), "chat.jsonl": make_chat_data.conversations()}
    for name, rows in made.items():
        text = "".join(json.dumps(row) + "\n" for row in rows)
        assert text == (ROOT / "lab" / "datasets" / name).read_text(encoding="utf-8"), name

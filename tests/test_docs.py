"""The product's own files: the README's Python blocks run, and no file speaks of how the code was made."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# words about how the code was developed, never about the product
FORBIDDEN = [
    r"\b(this|that|an? earlier|a later|the authoring|one|next|first|previous) session",
    r"between sessions",
    r"\bissues? \d+",
    r"\bspec (section|§|\d)",
    r"§",
    r"\.\./shared",
    r"not committed",
    r"\bI (ran|started|measured|tried|wrote|think|noticed)\b",
    r"\bwe (ran|started|measured|tried)\b",
]


def _product_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder, suffixes in (("mrfa", (".py", ".cpp", ".cu", ".h")), ("tools", (".py",)), ("configs", (".yaml",)),
                             ("tests", (".py",))):
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in suffixes]
    return [p for p in files if "fixtures" not in p.relative_to(ROOT).parts]


def test_product_files_speak_of_the_product() -> None:
    pattern = re.compile("|".join(FORBIDDEN), re.IGNORECASE)
    found = []
    for path in _product_files():
        if path.name == "test_docs.py":  # holds the words themselves, as data
            continue
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_word_list_catches_what_it_should() -> None:
    pattern = re.compile("|".join(FORBIDDEN), re.IGNORECASE)
    for bad in ("measured in this session", "see issue 17", "spec section 7", "spec §4", "../shared/fixtures",
                "the JSON is not committed", "I ran it twice"):
        assert pattern.search(bad), bad
    for fine in ("onnxruntime InferenceSession", "scope='session'", "the official decoder", "a shared updater"):
        assert not pattern.search(fine), fine


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert image and (ROOT / image.group(1)).is_file(), "the README's picture is missing"
    assert text.index("make demo") < text.index("mrfa animate --checkpoint") < text.index("## Python API")
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link


@pytest.mark.parametrize("index", range(len(_python_blocks((ROOT / "README.md").read_text(encoding="utf-8")))))
def test_readme_python_blocks_run(index: int) -> None:
    block = _python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[index]
    proc = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

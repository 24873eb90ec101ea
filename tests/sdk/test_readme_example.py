"""The README's SDK example, run as a reader would run it, against the server.

The example is the one ```python block of README.md. It reads the server's URL and
key from OPENAI_BASE_URL and OPENAI_API_KEY, so here it talks to the server under
test, whose fake upstream serves the models the example asks for.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, fake_upstream_url, running_server

README = ROOT / "README.md"

# Only guards a hang (an example that polls forever); a passing run takes seconds.
EXAMPLE_TIMEOUT_S = 120


def readme_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, (
        f"README.md should hold exactly one ```python block, the SDK example; found {len(blocks)}"
    )
    return blocks[0]


def _jsonl(path: Path) -> list[dict]:
    assert path.is_file(), f"the example did not write {path.name}"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_readme_example_uploads_creates_waits_and_downloads_a_batch(backend, tmp_path):
    code = readme_example()
    models = sorted(set(re.findall(r'"model":\s*"([^"]+)"', code)))
    assert models, "the README example names no model"
    server_dir, work_dir = tmp_path / "server", tmp_path / "example"
    server_dir.mkdir()
    work_dir.mkdir()
    script = work_dir / "readme_example.py"
    script.write_text(code)
    upstream = {"UPSTREAM_BASE_URL": fake_upstream_url(models=",".join(models))}

    with running_server(backend, server_dir, upstream) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update(OPENAI_BASE_URL=f"{server.base_url}/v1", OPENAI_API_KEY="key-a")
        result = subprocess.run(
            [sys.executable, str(script)], cwd=work_dir, env=env,
            capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S,
        )
        log = server.log()

    assert result.returncode == 0, f"the README example failed:\n{result.stderr}\nserver log:\n{log}"
    assert result.stdout.startswith("completed "), result.stdout
    # Every request line came back answered, in the file and on the screen; the
    # fake upstream echoes the last user message.
    requests = _jsonl(work_dir / "input.jsonl")
    assert requests, "the example's input file is empty"
    answers = {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
        for line in _jsonl(work_dir / "output.jsonl")
    }
    expected = {
        line["custom_id"]: f"echo: {line['body']['messages'][-1]['content']}" for line in requests
    }
    assert answers == expected
    for custom_id, answer in expected.items():
        assert f"{custom_id} {answer}\n" in result.stdout, result.stdout

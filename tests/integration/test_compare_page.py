"""The compare page in headless Chromium (the status page's browser, test_api.chromium),
served by uvicorn from an embedded SQLite database and a local store holding three
recorded jobs (tests/compare_scenario.py): no Ray, no training, a few seconds."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest
import uvicorn
from pydantic import SecretStr

from services.api import create_app
from services.config import Settings
from tests import compare_scenario
from tests.conftest import wait_until
from tests.integration.test_api import PNG_MAGIC, chromium
from tests.raycluster import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path):
    settings = Settings(
        home=tmp_path / "home", database_url=SecretStr(f"sqlite:///{tmp_path / 'page.db'}")
    )
    jobs = compare_scenario.build(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn to listen")
    yield f"http://127.0.0.1:{port}", jobs
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(
    shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
    reason="no chromium: apt could not install Debian's chromium package (.ci/run tries)",
)
def test_compare_page_in_headless_chromium(served, tmp_path):
    from PIL import Image

    url, jobs = served
    page = f"{url}/ui/compare?jobs={jobs.a},{jobs.b},{jobs.c}"
    shot = tmp_path / "compare.png"
    done = chromium(f"--screenshot={shot}", page, profile=tmp_path / "profile")
    assert shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        assert len(img.convert("RGB").getcolors(1_000_000) or []) > 50  # not blank
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    params = re.findall(r'<tr data-param="([\w.]+)">', html)
    assert params == ["batch_size", "phase1_lr", "seed"]  # only the ones that differ
    acc = re.search(r'<tr data-metric="accuracy">.*?</tr>', html, re.S).group(0)
    assert "<b>0.9500</b>" in acc and "0.8500" in acc
    gate = re.search(r'<table id="gate">.*?</table>', html, re.S).group(0)
    assert gate.count('data-status="fail"') == 2 and "not judged" in gate
    assert f'<section class="tuning" data-job="{jobs.b}">' in html
    assert 'id="same-test-split"' in html and "no &lt;images&gt; under" in html

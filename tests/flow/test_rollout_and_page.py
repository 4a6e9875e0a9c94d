"""Rollout and attention flow by hand, and flow.html in a real headless browser (when Chromium is here)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch

from vlmheads.flow.page import VIEWS, flow_html
from vlmheads.flow.rollout import _spearman, attention_flow, rollout


def test_rollout_and_flow_by_hand():
    """Two layers, three tokens. Layer attention (heads averaged), then A' = (A + I) / 2."""
    a1 = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0]]])
    a2 = torch.tensor([[[1.0, 0, 0], [0.0, 1.0, 0], [0.0, 1.0, 0]]])
    r = rollout([a1, a2])[0]  # last row of A2' @ A1'
    a1r = 0.5 * a1[0] + 0.5 * torch.eye(3)
    a2r = 0.5 * a2[0] + 0.5 * torch.eye(3)
    torch.testing.assert_close(r, (a2r @ a1r)[-1])
    assert abs(float(r.sum()) - 1.0) < 1e-6
    flow = attention_flow([a1, a2], torch.tensor([[0, 1]]))[0]
    # to token 0: through (1, 1) [capacity 0.5] then 0.5 to (0, 0); through (1, 2) [0.5] then 0.25 to (0, 0)
    assert abs(float(flow[0]) - 0.75) < 1e-6
    assert _spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 30])) == pytest.approx(1.0)
    assert _spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == pytest.approx(-1.0)


def _page(tmp_path):
    knockout = [{"edge": e, "layer_start": a, "layer_end": a, "function": "relational_reasoning", "metric": m,
                 "drop": 0.1 * a, "ci_low": 0.0, "ci_high": 0.2 * a + 0.01, "n": 8}
                for e in ("image->answer", "question->answer") for a in range(3) for m in ("accuracy", "logit_diff")]
    probes = [{"site": "decoder", "layer": i, "position": "answer", "accuracy": 0.3 + 0.2 * i, "ci_low": 0.2,
               "ci_high": 0.9, "chance": 0.25, "n_test": 20} for i in range(3)]
    rollout_summary = {"rollout_mean": [0.1, 0.3, 0.2, 0.4], "knockout_mean": [0.5, 1.5, 1.0, 2.0], "flow_mean": None,
                       "spearman_rollout": {"accuracy": 0.8, "ci_low": 0.6, "ci_high": 0.9, "n": 8}}
    attention = {"layers": [{"correct": [[0.1, 0.2], [0.3, 0.4]], "wrong": None}] * 2, "n_correct": 8, "n_wrong": 0,
                 "image_share": [0.4, 0.5], "image_share_of_sequence": 0.45}
    path = tmp_path / "flow.html"
    path.write_text(flow_html(knockout, probes, rollout_summary, attention, "test page"))
    return path


def test_page_is_offline_and_has_every_view(tmp_path):
    html = _page(tmp_path).read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html) and len(html) > 1_000_000  # plotly.js inlined
    assert all(f'data-view="{v}"' in html for v in VIEWS) and "id='flow-view'" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium not installed (apt-get install chromium)")
def test_page_renders_in_a_real_browser_and_its_control_switches_views(tmp_path):
    path = _page(tmp_path)
    run = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--virtual-time-budget=8000", "--dump-dom", f"file://{path}#selftest"],
                         capture_output=True, text=True, timeout=120)
    assert f"<title>selftest ok: {len(VIEWS)} views</title>" in run.stdout, run.stdout[:500]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console

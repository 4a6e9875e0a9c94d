"""flow.html: one offline, self-contained page of a flow run (Plotly inlined), one view at a time:

    knockout            accuracy drop per edge class (rows) and layer window (columns), intervals on hover
    probes              held-out probe accuracy for the relation by layer, per site and position, and chance
    rollout vs knockout per image patch: rolled-out attention from the answer position against the drop
                        when the answer may not attend to that patch (Spearman per example, averaged)
    attention           the answer position's attention over the image grid per layer (heads averaged),
                        correctly vs wrongly answered examples side by side, and the image tokens' share
                        of attention beside their share of the sequence
    located heads       each located head's attention from the answer position drawn on the images of a
                        few correctly and wrongly answered examples (AdaptVis's focus-area figure, per head)

Opened with ``#selftest`` the page switches through every view itself and writes the outcome into its
title (what the browser test reads).
"""

from __future__ import annotations

import json

import plotly.graph_objects as go
from plotly.subplots import make_subplots

VIEWS = ("knockout", "probes", "rollout vs knockout", "attention", "located heads on the image")


def _knockout_figure(rows: list[dict]) -> go.Figure:
    rows = [r for r in rows if r["metric"] == "accuracy"]
    spans = list(dict.fromkeys((r["layer_start"], r["layer_end"]) for r in rows))
    edges = list(dict.fromkeys(r["edge"] for r in rows))
    cell = {(r["edge"], (r["layer_start"], r["layer_end"])): r for r in rows}
    z = [[cell[(e, s)]["drop"] for s in spans] for e in edges]
    text = [[f"[{cell[(e, s)]['ci_low']:.2f}, {cell[(e, s)]['ci_high']:.2f}]" for s in spans] for e in edges]
    fig = go.Figure(go.Heatmap(z=z, x=[f"L{a}-{b}" for a, b in spans], y=edges, text=text, colorscale="Reds",
                               zmin=0, hovertemplate="%{y}, layers %{x}<br>accuracy drop %{z:.3f}<br>95% CI %{text}"
                                                     "<extra></extra>", colorbar={"title": "accuracy<br>drop"}))
    fig.update_layout(title="attention knockout (causal): accuracy lost when these edges are cut",
                      xaxis_title="decoder layers (window)", template="plotly_white")
    return fig


def _probe_figure(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    for site, position in dict.fromkeys((r["site"], r["position"]) for r in rows):
        rs = [r for r in rows if (r["site"], r["position"]) == (site, position)]
        fig.add_trace(go.Scatter(x=[r["layer"] for r in rs], y=[r["accuracy"] for r in rs], mode="lines+markers",
                                 name=f"{site}: {position}",
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [r["ci_high"] - r["accuracy"] for r in rs],
                                          "arrayminus": [r["accuracy"] - r["ci_low"] for r in rs]}))
    if rows:
        fig.add_hline(y=rows[0]["chance"], line_dash="dot", annotation_text="chance")
    fig.update_layout(title="probes for the relation (descriptive): held-out accuracy by layer",
                      xaxis_title="layer", yaxis={"range": [0, 1.05], "title": "accuracy"}, template="plotly_white")
    return fig


def _rollout_figure(rollout: dict) -> go.Figure:
    if not rollout:
        return go.Figure().update_layout(title="rollout vs knockout: not computed")
    k = rollout["knockout_mean"]
    fig = go.Figure(go.Scatter(x=rollout["rollout_mean"], y=k, mode="markers+text", name="rollout",
                               text=[f"p{i}" for i in range(len(k))], textposition="top center"))
    if rollout.get("flow_mean"):
        fig.add_trace(go.Scatter(x=rollout["flow_mean"], y=k, mode="markers", name="attention flow", xaxis="x2"))
        fig.update_layout(xaxis2={"overlaying": "x", "side": "top", "title": "attention flow"})
    s = rollout["spearman_rollout"]
    fig.update_layout(title=f"per patch: rolled-out attention vs knockout drop; Spearman per example "
                            f"{s['accuracy']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]",
                      xaxis_title="rolled-out attention from the answer position",
                      yaxis_title="logit-difference drop (answer may not attend to the patch)",
                      template="plotly_white")
    return fig


def _attention_figure(attention: dict) -> go.Figure:
    layers = attention.get("layers", [])
    if not layers:
        return go.Figure().update_layout(title="attention over the image: not computed")
    fig = make_subplots(rows=len(layers), cols=2, subplot_titles=[
        f"layer {i}: {side} ({attention['n_' + side]} examples)" for i in range(len(layers))
        for side in ("correct", "wrong")])
    for i, layer in enumerate(layers):
        for j, side in enumerate(("correct", "wrong")):
            grid = layer.get(side)
            if grid is not None:
                fig.add_trace(go.Heatmap(z=grid, colorscale="Viridis", showscale=False,
                                         hovertemplate="row %{y}, col %{x}: %{z:.4f}<extra></extra>"), i + 1, j + 1)
            fig.update_yaxes(autorange="reversed", row=i + 1, col=j + 1)
    shares = attention.get("image_share", [])
    fig.update_layout(height=260 * len(layers), template="plotly_white",
                      title="answer position's attention over the image grid (heads averaged); image share of "
                            "attention by layer " + ", ".join(f"{x:.2f}" for x in shares)
                            + f" vs {attention.get('image_share_of_sequence', float('nan')):.2f} of the sequence")
    return fig


def _heads_figure(attention: dict) -> go.Figure:
    gallery, heads = attention.get("gallery"), attention.get("heads")
    if not gallery or not heads:
        return go.Figure().update_layout(title="located heads on the image: no locate run given (--heads-from)")
    rows, cols = len(heads), len(gallery)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.01, vertical_spacing=0.04, subplot_titles=[
        f"L{l}H{h} | {'correct' if g['correct'] else 'WRONG'}: {g['answer']}" for l, h in heads for g in gallery])
    grid_h, grid_w = attention["grid"]
    for r in range(rows):
        for c, example in enumerate(gallery):
            height, width = len(example["image"]), len(example["image"][0])
            fig.add_trace(go.Image(z=example["image"], hoverinfo="skip"), r + 1, c + 1)
            fig.add_trace(go.Heatmap(z=example["maps"][r], x0=width / grid_w / 2, dx=width / grid_w,
                                     y0=height / grid_h / 2, dy=height / grid_h, opacity=0.55, colorscale="Hot",
                                     showscale=False, hovertemplate="attention %{z:.4f}<extra></extra>"), r + 1, c + 1)
            fig.update_xaxes(visible=False, row=r + 1, col=c + 1)
            fig.update_yaxes(visible=False, row=r + 1, col=c + 1)
    fig.update_layout(height=230 * rows + 80, width=230 * cols + 60, template="plotly_white",
                      title="located heads: the answer position's attention drawn on the image")
    return fig


def flow_html(knockout: list[dict], probes: list[dict], rollout: dict, attention: dict, title: str) -> str:
    figures = [_knockout_figure(knockout), _probe_figure(probes), _rollout_figure(rollout),
               _attention_figure(attention), _heads_figure(attention)]
    parts = []
    for i, (name, fig) in enumerate(zip(VIEWS, figures)):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"view-{i}")
        parts.append(f'<div class="view" data-view="{name}" style="display:{"block" if i == 0 else "none"}">{div}</div>')
    options = "".join(f'<option value="{i}">{name}</option>' for i, name in enumerate(VIEWS))
    script = """
<script>
function showView(i) {
  document.querySelectorAll('.view').forEach(function (v, j) { v.style.display = (j == i) ? 'block' : 'none'; });
  var plot = document.getElementById('view-' + i);
  if (plot && window.Plotly) { Plotly.Plots.resize(plot); }
}
document.getElementById('flow-view').addEventListener('change', function (e) { showView(e.target.value); });
if (location.hash.indexOf('#view=') === 0) {  // open one view: flow.html#view=3
  document.getElementById('flow-view').value = location.hash.slice(6); showView(location.hash.slice(6));
}
if (location.hash === '#selftest') {
  var select = document.getElementById('flow-view'), ok = 0, problems = [];
  for (var i = 0; i < select.options.length; i++) {
    select.value = String(i);
    select.dispatchEvent(new Event('change'));
    var shown = Array.prototype.filter.call(document.querySelectorAll('.view'),
                                            function (v) { return v.style.display === 'block'; });
    var plot = document.getElementById('view-' + i);
    if (shown.length === 1 && shown[0].contains(plot) && plot.classList.contains('js-plotly-plot')) { ok++; }
    else { problems.push(select.options[i].text); }
  }
  document.title = problems.length ? 'selftest failed: ' + problems.join(', ') : 'selftest ok: ' + ok + ' views';
}
</script>"""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family:sans-serif'><h3>{title}</h3>"
            f"<div>view <select id='flow-view'>{options}</select> (knockout is causal; probes, rollout and "
            f"attention are descriptive)</div>{''.join(parts)}{script}</body></html>")


def summary_json(rollout: dict) -> str:
    return json.dumps({k: v for k, v in rollout.items() if k.startswith("spearman")})

"""Interactive layer x head maps (Plotly), self-contained HTML that works offline.

A pure function of a saved locate run: ``headmap_html(HeadScores.load(run_dir))``.

One heatmap per (method, function); two drop-down menus pick the method and the function. Hover
shows the score, its 95% interval, its rank and the head's attention share on the image. The
selected heads are outlined.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go

from ..runs import write_text_atomic
from ..scores import HeadScores



def headmap_html(result: HeadScores, title: str | None = None) -> str:
    title = title or f"{result.model}: heads by function"
    keys = sorted(result.scores)
    methods = sorted({m for m, _ in keys})
    functions = sorted({f for _, f in keys})
    fig = go.Figure()
    index = {}
    for m in methods:
        for f in functions:
            if (m, f) not in result.scores:
                continue
            v = result.scores[(m, f)]
            score = v["score"]
            n_layers, n_heads = score.shape
            rank = {h: i + 1 for i, h in enumerate(result.ranking(m, f))}
            share = result.scores.get(("image_share", f), {}).get("score")
            custom = [[[float(v["ci_low"][l, h]), float(v["ci_high"][l, h]), rank[(l, h)],
                        float(share[l, h]) if share is not None else float("nan")] for h in range(n_heads)]
                      for l in range(n_layers)]
            kind = result.kind(m, f)  # causal | estimate | descriptive (descriptive: one-sided colours, no interval)
            descriptive = kind == "descriptive"
            index[f"{m}|{f}"] = len(fig.data)
            interval = "" if descriptive else "<br>95% CI [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
            fig.add_trace(go.Heatmap(
                z=score.tolist(), x=[f"H{h}" for h in range(n_heads)], y=[f"L{l}" for l in range(n_layers)],
                customdata=custom, colorscale="RdBu_r" if not descriptive else "Viridis",
                zmid=0 if not descriptive else None, visible=False, name=f"{m} / {f}",
                colorbar={"title": f"{m}<br>({kind})"},
                hovertemplate=("%{y} %{x}<br>score %{z:.4f}" + interval +
                               "<br>rank %{customdata[2]}<br>image attention share %{customdata[3]:.3f}"
                               f"<extra>{m} / {f}</extra>")))
    sel = result.selected
    roles = result.summary.get("head_roles", {}).get("heads", {})  # writing / routing, with dla
    labels = [roles.get(f"L{l}H{h}", {}).get("role", "") for l, h in sel]
    fig.add_trace(go.Scatter(x=[f"H{h}" for _, h in sel], y=[f"L{l}" for l, _ in sel],
                             mode="markers+text" if roles else "markers", text=[r[:1].upper() for r in labels],
                             hovertext=[f"L{l}H{h} {r}" + (f" (direct {roles[f'L{l}H{h}']['direct']:.3f} of "
                                                          f"{roles[f'L{l}H{h}']['total']:.3f})" if r else "")
                                        for (l, h), r in zip(sel, labels)],
                             marker={"symbol": "square-open", "size": 22, "color": "black", "line": {"width": 3}},
                             name=f"selected for {result.function}" + (" (W writing, R routing)" if roles else ""),
                             hoverinfo="text+name" if roles else "name"))
    first = f"{result.select_by}|{result.function}"
    if first not in index:
        first = next(iter(index))
    fig.data[index[first]].visible = True
    fig.update_layout(title=title, yaxis={"autorange": "reversed", "title": "layer"}, xaxis={"title": "head"},
                      height=max(420, 28 * int(result.geometry["n_layers"]) + 200), template="plotly_white")
    m0, f0 = first.split("|")
    options = lambda items, chosen: "".join(  # noqa: E731
        f'<option value="{x}"{" selected" if x == chosen else ""}>{x}</option>' for x in items)
    controls = (f'<div style="font-family:sans-serif;margin:8px">method <select id="hm-method">{options(methods, m0)}'
                f'</select> function <select id="hm-function">{options(functions, f0)}</select> '
                f'<span id="hm-note" style="color:#a00"></span></div>')
    script = """
var idx = %s; var gd = document.getElementById('{plot_id}');
function show() {
  var key = document.getElementById('hm-method').value + '|' + document.getElementById('hm-function').value;
  var vis = gd.data.map(function(t, i) { return i === gd.data.length - 1 ? true : idx[key] === i; });
  document.getElementById('hm-note').textContent = (key in idx) ? '' : 'not computed for this pair';
  Plotly.restyle(gd, {visible: vis});
}
document.getElementById('hm-method').onchange = show; document.getElementById('hm-function').onchange = show;
""" % json.dumps(index)
    html = fig.to_html(include_plotlyjs=True, full_html=True, post_script=script)
    return html.replace("<body>", "<body>" + controls, 1)


def write_headmap(result: HeadScores, path: Path) -> Path:
    """Write ``headmap_html(result)`` to ``path`` atomically."""
    write_text_atomic(path, headmap_html(result))
    return path

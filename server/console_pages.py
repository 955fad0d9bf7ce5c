"""Templates of `convergent console` (Jinja2, autoescaped; plain HTML and inline SVG, no JavaScript)."""

from __future__ import annotations

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · convergent console</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; }
 header { background: #1d2430; color: #fff; padding: 10px 24px; display: flex; gap: 22px; align-items: baseline; flex-wrap: wrap; }
 header b { font-size: 16px; } header a { color: #cfe3ff; text-decoration: none; } header a.on { color: #fff; font-weight: 600; }
 header .who { margin-left: auto; color: #9fb0c6; font-size: 12px; }
 main { padding: 18px 24px; max-width: 1200px; }
 h1 { font-size: 20px; margin: 4px 0 14px; } h2 { font-size: 16px; margin: 22px 0 8px; }
 table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
 th, td { border: 1px solid #dfe3ea; padding: 4px 10px; text-align: left; vertical-align: top; }
 th { background: #eef1f5; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .cards { display: flex; gap: 12px; flex-wrap: wrap; } .card { background: #fff; border: 1px solid #dfe3ea; padding: 10px 14px; min-width: 150px; }
 .card .v { font-size: 22px; font-weight: 600; } .note { color: #5b6677; font-size: 12px; }
 .bad { color: #a3261b; } .ok { color: #1d7a38; } .warn { color: #8a5a00; }
 .error { background: #fff1f0; border: 1px solid #f3b7b1; padding: 10px 14px; }
 svg { background: #fff; border: 1px solid #dfe3ea; max-width: 100%; height: auto; }
</style></head><body>
<header><b>convergent</b>
{% for href, label in nav %}<a href="{{ href }}" class="{{ 'on' if href == active else '' }}">{{ label }}</a>{% endfor %}
<span class="who">{{ server }} · {{ who }}</span></header>
<main><h1>{{ title }}</h1>{% block body %}{% endblock %}</main></body></html>"""

OVERVIEW = """{% extends "base" %}{% block body %}
<div class="cards">
 <div class="card"><div class="note">health</div>
 <div class="v {{ 'ok' if healthy else 'bad' }}" id="health">{{ 'SERVING' if healthy else 'NOT SERVING' }}</div></div>
 <div class="card"><div class="note">stored vectors (tenant {{ usage.tenant }})</div><div class="v" id="stored">{{ usage.stored_vectors }}</div>
  <div class="note">quota:
 <span id="quota">{{ usage.max_vectors if usage.max_vectors else 'none' }}</span>{% if usage.max_vectors %}
  ({{ '%.1f' % (100 * usage.stored_vectors / usage.max_vectors) }} % used){% endif %}</div></div>
 <div class="card"><div class="note">models · anchor sets</div><div class="v">{{ n_models }} · {{ n_sets }}</div></div>
 <div class="card"><div class="note">fits · galleries</div><div class="v">{{ n_fits }} · {{ n_galleries }}</div></div>
</div>
<h2>Server</h2>
<table><tr><th>version</th><td id="version">{{ info.version }}</td></tr><tr><th>API</th><td>{{ info.api }}</td></tr>
<tr><th>largest message</th><td class="num">{{ info.max_receive_message_bytes }} bytes</td></tr>
<tr><th>vectors per message</th><td class="num">{{ info.max_vectors_per_message }}</td></tr>
<tr><th>largest dimension</th><td class="num">{{ info.max_dim }}</td></tr>
<tr><th>your key</th><td>{{ usage.key_id or 'none (authentication off)' }}, role {{ usage.role }}</td></tr></table>
<p class="note">Read-only: this console is a gRPC client of the server and sees exactly what its key may see.</p>
{% endblock %}"""

MODELS = """{% extends "base" %}{% block body %}
<h2>Models</h2>
<table id="models"><tr><th>name</th><th>dim</th><th>version</th><th>normalised</th></tr>
{% for m in models %}<tr><td>{{ m.name }}</td><td class="num">{{ m.dim }}</td><td class="num">{{ m.version }}</td>
 <td>{{ 'yes' if m.normalize else 'no' }}</td></tr>{% endfor %}</table>
<h2>Anchor sets</h2>
{% for s in sets %}<h3 id="set-{{ s.name }}">{{ s.name }}
 <span class="note">data version {{ s.data_version }} · <a href="/atlas/{{ s.name }}">atlas</a></span></h3>
<table><tr><th>model</th><th>anchors</th>{% for m in s.models %}<th>shared with {{ m }}</th>{% endfor %}</tr>
{% for m, count in s.models.items() %}<tr><td>{{ m }}</td><td class="num">{{ count }}</td>
{% for other in s.models %}<td class="num">{% if other == m %}—{% else %}{{ overlap[s.name].get((m, other), 0) }}{% endif %}</td>{% endfor %}
 </tr>{% endfor %}</table>
{% else %}<p>No anchor sets yet.</p>{% endfor %}
{% endblock %}"""

FITS = """{% extends "base" %}{% block body %}
<p class="note">Diagnostics are measured on held-out anchors the map was not fitted on (top-1, CKA: higher is better).</p>
<table id="fits"><tr><th>id</th><th>route</th><th>anchor set</th><th>method</th><th>top-1</th><th>CKA</th><th>held out</th><th>state</th>
 <th>warnings</th></tr>
{% for f in fits %}<tr><td>{{ f.id }}</td><td>{{ f.source or f.models|join(' + ') }} → {{ f.target or 'shared' }}</td><td>{{ f.anchor_set }}</td>
 <td>{{ f.method }}</td>
<td class="num">{{ f.metrics.get('top1')|num }}</td><td class="num">{{ f.metrics.get('cka')|num }}</td>
 <td class="num">{{ f.metrics.get('n_heldout', 0)|int }}</td>
<td class="{{ 'warn' if f.stale else 'ok' }}">{{ 'stale' if f.stale else 'current' }}</td><td>{{ f.warnings|join('; ') }}</td></tr>
{% else %}<tr><td colspan="9">No fits yet.</td></tr>{% endfor %}</table>
{% endblock %}"""

ATLAS = """{% extends "base" %}{% block body %}
<p class="note">Every ordered pair of the set's models: the newest fit of the route on the set and its held-out diagnostics.
Models are clustered by average linkage on 1 − symmetric top-1, cut at {{ atlas.cluster_distance }}; a route with no current fit counts as top-1 0.</p>
{{ heatmap|safe }}
<h2>Clusters</h2><ol id="clusters">{% for group in atlas.clusters %}<li>{{ group|join(', ') }}</li>{% endfor %}</ol>
{% if missing %}
 <p class="warn">{{ missing }} routes have no current fit: <code>convergent atlas --anchor-set {{ atlas.anchor_set }} --fit-missing</code></p>{% endif %}
<table id="atlas"><tr><th>source</th><th>target</th><th>method</th><th>top-1</th><th>CKA</th><th>mutual k-NN</th><th>condition</th><th>held out</th>
 <th>pairs</th><th>state</th></tr>
{% for e in atlas.entries %}<tr><td>{{ e.source }}</td><td>{{ e.target }}</td><td>{{ e.method or '—' }}</td><td class="num">{{ e.top1|num }}</td>
<td class="num">{{ e.cka|num }}</td><td class="num">{{ e.mutual_knn|num }}</td><td class="num">{{ e.condition_number|num('.3g') }}</td>
<td class="num">{{ e.n_heldout }}</td><td class="num">{{ e.n_pairs }}</td>
 <td>{{ 'no fit' if not e.fit_id else ('stale' if e.stale else 'current') }}</td></tr>{% endfor %}</table>
{% endblock %}"""

GALLERIES = """{% extends "base" %}{% block body %}
<table id="galleries"><tr><th>gallery</th><th>model</th><th>size</th><th>index</th><th>models with a current route to it</th><th>verification</th>
 </tr>
{% for g in galleries %}<tr><td>{{ g.name }}</td><td>{{ g.model }} v{{ g.model_version }}</td><td class="num">{{ g.size }}</td><td>{{ g.index }}</td>
<td>{{ routes[g.name]|join(', ') or '—' }}</td>
 <td>{% for m in routes[g.name] %}<a href="/verification?a={{ m }}&b={{ g.model }}">{{ m }}→{{ g.model }}</a> {% endfor %}</td></tr>
{% else %}<tr><td colspan="6">No galleries yet.</td></tr>{% endfor %}</table>
{% endblock %}"""

VERIFICATION = """{% extends "base" %}{% block body %}
<p class="note">Calibration: {{ report.calibration }} ({{ report.calibration_pairs }}); route {{ report.route }}, direction {{ report.direction }}.
{{ report.n_genuine }} genuine and {{ report.n_impostor }} impostor pairs; only FARs they resolve are shown.</p>
{{ det|safe }}
<table id="points"><tr><th>FAR requested</th><th>threshold</th><th>FAR achieved</th><th>TAR</th></tr>
{% for p in report.points %}<tr><td class="num">{{ p.requested_far|num('.0e') }}</td><td class="num">{{ p.threshold|num }}</td>
 <td class="num">{{ p.far|num('.4f') }}</td><td class="num">{{ p.tar|num }}</td></tr>{% endfor %}</table>
<p>EER <span id="eer">{{ report.eer|num }}</span> at threshold {{ report.eer_threshold|num }}</p>
{% endblock %}"""

AUDIT = """{% extends "base" %}{% block body %}
<table id="audit"><tr><th>at (UTC)</th><th>key</th><th>call</th><th>target</th><th>outcome</th><th>request id</th></tr>
{% for e in entries %}<tr><td>{{ e.at|utc }}</td><td>{{ e.key_id }}</td><td>{{ e.method }}</td><td>{{ e.target }}</td><td>{{ e.outcome }}</td>
 <td>{{ e.request_id }}</td></tr>
{% else %}<tr><td colspan="6">No entries yet.</td></tr>{% endfor %}</table>
{% endblock %}"""

ERROR = """{% extends "base" %}{% block body %}
<div class="error" id="error"><b>{{ code }}</b>: {{ message }}</div>{% if hint %}<p class="note">{{ hint }}</p>{% endif %}
{% endblock %}"""

TEMPLATES = {"base": BASE, "overview": OVERVIEW, "models": MODELS, "fits": FITS, "atlas": ATLAS, "galleries": GALLERIES,
             "verification": VERIFICATION, "audit": AUDIT, "error": ERROR}

"""Operating zbatch like a service: what a scheduler's monitoring expects of it.

    metrics.py          Prometheus figures: a node_exporter textfile, a Pushgateway
    pings.py            dead-man's-switch pings (the healthchecks.io convention)
    events.py           --log-format json: one JSON object per event
    manifest.py         summary.json as a versioned manifest; one per shard, and the view
    summary.schema.json its JSON Schema
    watch.py            the above around one run (``zbatch.api.arun``)
    secrets.py          URLs shown without the token they may hold

Nothing here is imported by a run that does not ask for it (prometheus-client least of all).
"""

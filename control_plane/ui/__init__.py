"""What an operator looks at: the dashboard at ``/ui``, its data endpoints, and ``weir report``.

* :mod:`.evidence` - a verdict's per-SLO progress in one shape (also used by ``/metrics`` and ``weir get --watch``)
* :mod:`.history` - each SLO's test statistic over time (an engine observer)
* :mod:`.series` - per-version request, error and latency series of a rollout (``GET /v1/rollouts/{name}/series``)
* :mod:`.stream` - server-sent events from the store's event feed (``GET /v1/events/stream``)
* :mod:`.routes` - the pages, their static files and the two endpoints above
* :mod:`.report` - one self-contained HTML file per rollout (``weir report``)
"""

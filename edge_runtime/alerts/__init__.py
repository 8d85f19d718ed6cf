"""Checkout alerts: standing rules evaluated at every commit of a stream, alerts kept in a durable
outbox in the state directory and delivered at least once to the store's MQTT broker and webhooks.

    record.py       the Alert record and its stable id
    settings.py     the runtime config's ``alerts:`` section, the rule names it may use
    outbox.py       the SQLite store: alerts, their status, what each sink still has to receive
    mqtt_sink.py    delivery to an MQTT broker (paho-mqtt), one connection per stream
    webhook_sink.py delivery by HTTP POST
    dispatcher.py   one thread per sink draining the outbox, with backoff
    metrics.py      the alerts' Prometheus series
    service.py      what the runtime holds: the outbox and sinks, raising an alert, status and metrics
    evaluation.py   the rules' evaluation thread, fed by the commit hook: a rule engine per stream
    till_feed.py    the till's scans and transactions of each stream, as the rules read them
    subscriber.py   the other end: every lane's alerts from a broker (``lvm-edge alerts --broker``)
    rules/          the rules themselves, one module each, found through a registry (RULES, RuleEngine)
    rule_events.py  the events the rules read (what_happened from EVENT_FLOOR)
    pos_scans.py    the till's scans of each stream, as the store's point-of-sale system sends them
    sqlite_file.py  how the outbox and the till's scans open their SQLite files
"""

"""Standing rules over "what happened": which events of a lane are alerts.

    registry.py             the rule contract (``Rule``), ``RULES`` and ``@register_rule``
    ledger.py               what a rule remembers (``Ledger``, ``Seen``, ``KEEP_S``) and its alert drafts (``draft``)
    engine.py               ``RuleEngine``: a lane's rules, each with its ledger
    bagged_without_scan.py  a product bagged with no scan left to pay for it
    pass_around.py          a product moved over the scanner without the scanner reading it
    left_in_basket.py       an item still in the basket, never taken out, at the till's transaction end

A new rule is a new module here, registered with ``@register_rule`` and imported below.
"""
from edge_runtime.alerts.rules.registry import RULES, Rule, register_rule, thresholds_table
from edge_runtime.alerts.rules.ledger import KEEP_S, Ledger, Seen, draft
from edge_runtime.alerts.rules.engine import RuleEngine
from edge_runtime.alerts.rules import bagged_without_scan, left_in_basket, pass_around  # noqa: F401  (they register themselves)

__all__ = ["KEEP_S", "RULES", "Ledger", "Rule", "RuleEngine", "Seen", "draft", "register_rule", "thresholds_table"]

"""The offline recommender (this package): an extractive, grounded, deterministic recommendation.

No network and no model. Every step is a line lifted from the retrieved runbook text (a list
item, a list item with the commands of the code block under it, or, for runbooks without lists,
a sentence), cleaned of Markdown noise, labelled with the kind of section it comes from
("Check: " for diagnosis, "Fix: " for mitigation, ...) and cited as ``[runbook: <id>]``.

Selection, for ``max_steps`` steps:

- per runbook, only the best available tier is used: list items under action-like headings
  (diagnosis, mitigation, verification), else list items under other non-descriptive headings
  (escalation, notes), else the first informative sentences;
- the best runbook (the first in ``chunks``) gets most of the budget, split between mitigation
  (the larger half) and diagnosis; up to a third of the budget goes to steps of other runbooks that
  share at least two terms with the log; remaining room goes to other runbooks' steps that share
  any term with the log;
- inside a group, steps are ranked by IDF-weighted term overlap with the log, ties in document order;
- output order: diagnosis, mitigation, verification, other; then runbook rank; then document order.
"""

from incident_responder.backends.recommenders.offline.recommender import SOURCE, OfflineRecommender

__all__ = ["SOURCE", "OfflineRecommender"]

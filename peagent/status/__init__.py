"""Status events of a deployment (docs/status.md): what happened, stored here and forwarded to the DP.

* :mod:`peagent.status.event`: the event, schema 1, and :func:`validate_event` for receivers;
* :mod:`peagent.status.reporter`: :class:`Reporter`, what the deploy's steps report through;
* :mod:`peagent.status.journal`: the events on disk, and how many were delivered;
* :mod:`peagent.status.sender`: posting the undelivered ones, replayed in order when the link is back;
* :mod:`peagent.status.console`: the console's lines and progress bars.
"""

from peagent.status.event import Event, EventError, validate_event
from peagent.status.reporter import Reporter

__all__ = ["Event", "EventError", "Reporter", "validate_event"]

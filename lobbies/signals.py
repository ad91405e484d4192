"""The relay's events: the plugin layer. Any installed app may connect receivers to these
signals (``analytics`` is one); the relay works the same with none.

Every signal is sent with ``sender`` set to the relay's ``EventBus`` class and these keyword
arguments (times are ``time.time()`` seconds, peer and document ids are strings, ``user_id`` is
None for an anonymous peer):

``peer_online``     peer_id, user_id, at, online (peers online on the whole relay right after
                    it came, every worker's with Redis presence; None when presence could not
                    say)
``peer_offline``    peer_id, user_id, at, seconds (how long it was online)
``lobby_joined``    document_id, peer_id, user_id, nickname, game, role ("host" | "member"), at
``lobby_left``      document_id, peer_id, reason ("left", "offline", "closed", "kicked",
                    "banned", "private", "full", "host_left"), seconds (how long it was in), at
``introduced``      document_id, peers (how many peers this Join introduced there), at
``pipe_opened``     document_id, seeker, target, how ("spliced": inside uvicorn, "in_process":
                    through the consumers, "cross_worker": its ends on two workers, sent by
                    one of them), at
``pipe_traffic``    document_id, seeker, target, frames (seeker to target, target to seeker),
                    bytes (the same two ways, as written to the receiving client: frame
                    headers included): what moved since the last report, sent every
                    ``RELAY_PIPE_REPORT_SECONDS`` for open pipes and once when the pipe closes
``pipe_closed``     document_id, seeker, target, seconds, at
``lobby_created``   document_id, owner_id, game, at
``lobby_changed``   document_id, state, at
``operator_action`` action ("create" (by an operator), "update", "lock", "open", "close",
                    "delete", "kick", "ban", "transfer"), document_id (None: relay-wide),
                    peer_id (or None), user_id (who did it; None: the relay itself, e.g. an
                    ownerless lobby aged out), detail (a dict: ``fields`` changed; ``reason``
                    of a delete; ``banned``, ``expires_at``; ``previous``, ``owner``), at
``relay_stopping``  at: the server has stopped and every event before it was delivered; write
                    what you hold (sent in the stopping thread, once)

None is ever sent per pipe frame. Events from the sockets are queued and delivered by one
background task, off the event loop, in order (``lobbies.events``): a receiver that raises is
logged and the others still run, and a slow one only delays later events (past
``RELAY_EVENT_QUEUE`` queued events, new ones are dropped and counted, never waited for). Events
from HTTP views (lobby changes, operator actions) are delivered in the view's own thread.
"""

from __future__ import annotations

from django.dispatch import Signal

peer_online = Signal()
peer_offline = Signal()
lobby_joined = Signal()
lobby_left = Signal()
introduced = Signal()
pipe_opened = Signal()
pipe_traffic = Signal()
pipe_closed = Signal()
lobby_created = Signal()
lobby_changed = Signal()
operator_action = Signal()
relay_stopping = Signal()

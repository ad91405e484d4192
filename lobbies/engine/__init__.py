"""The wire engine: what speaks the relay protocol on the sockets.

The protocol's frames and paths (``protocol``), who meets whom (``discovery``), the ephemeral
state of who is where (``presence``), the live sockets (``connections``), a control socket's
life (``peers``) and a pipe's (``pipes``), the consumers that drive them (``consumers``,
``routing``), the servers and the spliced fast path (``servers``, ``splice``), the abuse limits
(``ratelimits``), the Origin rule (``security``), and the one way to act on a live socket
(``orders``).

It decides nothing about lobbies itself: the rules are ``lobbies.policy``, the database facts
``lobbies.admission``, and what owners and operators do is the product side around this package.
"""

"""X-Road/NDXP ingress: provincial services served to callers behind a security server.

Sits in the gateway layer (imports bus.gateway's pipeline and runtime, never adapters):
:mod:`.trust` (security servers, client → consumer), :mod:`.soap` (message protocol 4.0
envelopes and Faults), :mod:`.wsdl` (a WSDL per provider service from its request model),
:mod:`.call` (the consumer pipeline's stages, the broker), :mod:`.meta` (metaservices),
:mod:`.ingress` (the handlers). Config: ``provider:`` (:mod:`bus.config.provider`).
"""

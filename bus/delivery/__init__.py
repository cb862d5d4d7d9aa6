r"""Delivery of one-way traffic at the worker layer: one-way sends to their upstream, events
to webhook and pull subscribers, with a persisted retry schedule.

| module | job |
|---|---|
| ``signature`` | the webhook signature (HMAC-SHA256 over timestamp + body): sign, verify |
| ``fields`` | field minimisation of an event per subscription |
| ``schedule`` | the attempt loop: backoff, ``deliver_within``, hold-and-hand-back, state |
| ``targets`` | what one attempt is: a send (the adapter), a webhook POST, a pull-log append |
| ``runner`` | consumes every outbox queue of the config with its target |
| ``recorder`` | what delivery reports for metrics and the audit trail |

Sits beside ``bus.worker`` (same layer, independent of it): the composition root hands it
the worker's request handler for sends.
"""

"""Errors shared by the answerer back ends and their actors."""
from __future__ import annotations


class RequestError(ValueError):
    """A request that cannot be answered; the message names the request key and the reason."""


class AnswererDied(RuntimeError):
    """The model engine behind an answerer is gone; the hosting actor exits so that its pool replaces it."""


class EngineStartError(RuntimeError):
    """The model engine did not start with the configured limits; the message says which setting to change."""


class AnswerersGaveUp(RuntimeError):
    """The answerer actors died more often than the pool's max_restarts allows; the message says how often."""

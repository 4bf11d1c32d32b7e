"""Attacks: triggers, data poisoning and (later) model poisoning. Attacks know nothing of defenses."""

from .backdoor import BatchPoisoner
from .triggers import TRIGGER_NAMES, Trigger, named_trigger

__all__ = ["BatchPoisoner", "TRIGGER_NAMES", "Trigger", "named_trigger"]

"""Moved to tests/support/receivers.py; this re-export goes once the last importers move."""

from tests.support.receivers import Answer, FakeResolver, Receiver, ServerFactory, answer, start_receiver

__all__ = ["Answer", "FakeResolver", "Receiver", "ServerFactory", "answer", "start_receiver"]

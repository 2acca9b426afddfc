"""The bus every service uses: typed publish/subscribe over Kafka (FastStream + aiokafka) or the
in-process twin, with the shared delivery policy, idempotent handling and the outbox."""

from reelfab.bus.base import Bus, Subscription, new_event_id, now_utc
from reelfab.bus.message import Event, Handler, Headers, Published, RawMessage
from reelfab.bus.policy import DeadLetter, DeliveryPolicy, RetryPolicy

__all__ = [
    "Bus", "DeadLetter", "DeliveryPolicy", "Event", "Handler", "Headers", "Published", "RawMessage",
    "RetryPolicy", "Subscription", "new_event_id", "now_utc",
]

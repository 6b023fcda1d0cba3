"""`manage.py items_deadletters list|show ID|replay ID|replay --all`: the dead-letter queue, for people."""

import datetime as dt
import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu import Connection, Message, Producer

from app.messaging import messages
from app.messaging.queues import ITEMS_QUEUE, dead_letter_queue, items_queue


def _item_ids(message: Message) -> list[str]:
    try:
        return messages.item_ids(json.loads(message.body))
    except ValueError:  # not JSON
        return ["?"]


def _why(message: Message) -> tuple[str, str]:
    headers = message.headers or {}
    if messages.REASON_HEADER in headers:
        return headers[messages.REASON_HEADER], headers.get(messages.ERROR_HEADER, "")
    # Dead-lettered by RabbitMQ itself: x-delivery-limit reached (the worker kept dying on it).
    deaths = headers.get("x-death") or [{}]
    return str(deaths[0].get("reason", "unknown")), "redelivered past the queue's x-delivery-limit"


class Command(BaseCommand):
    help = "List, show or replay messages in the items dead-letter queue."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "show", "replay"])
        parser.add_argument("item_id", nargs="?", help="the item id of the message to show or replay")
        parser.add_argument("--all", action="store_true", help="replay every dead-lettered message")
        parser.add_argument("--limit", type=int, default=1000, help="look at most at this many messages")

    def handle(self, *args, action: str, item_id: str | None, all: bool, limit: int, **options):
        if not settings.BROKER_URL:
            raise CommandError("BROKER_URL is not set: the embedded default has no queues.")
        if action in ("show", "replay") and not (item_id or (action == "replay" and all)):
            raise CommandError(f"{action} needs an item id" + (" or --all" if action == "replay" else "") + ".")
        with Connection(settings.BROKER_URL, transport_options={"confirm_publish": True}) as connection:
            channel = connection.channel()
            dead_letter_queue(channel).declare()
            # Unacked gets: whatever we do not ack goes back to the queue when the channel closes.
            messages = []
            for _ in range(limit):
                message = dead_letter_queue(channel).get(no_ack=False, accept=["json"])
                if message is None:
                    break
                messages.append(message)
            if action == "list":
                self._list(messages)
            elif action == "show":
                self._show([m for m in messages if item_id in _item_ids(m)], item_id)
            else:
                chosen = messages if all else [m for m in messages if item_id in _item_ids(m)]
                self._replay(Producer(channel), chosen)
            channel.close()

    def _list(self, messages: list[Message]) -> None:
        self.stdout.write(f"{len(messages)} dead-lettered message(s)")
        for message in messages:
            reason, error = _why(message)
            when = (message.headers or {}).get(messages.DEAD_LETTERED_AT_HEADER)
            at = dt.datetime.fromtimestamp(when, tz=dt.UTC).isoformat(timespec="seconds") if when else "-"
            attempts = (message.headers or {}).get(messages.ATTEMPTS_HEADER, "-")
            self.stdout.write(f"{','.join(_item_ids(message))}\t{reason}\tattempts={attempts}\t{at}\t{error[:120]}")

    def _show(self, messages: list[Message], item_id: str) -> None:
        if not messages:
            raise CommandError(f"No dead-lettered message for item {item_id}.")
        for message in messages:
            reason, error = _why(message)
            self.stdout.write(
                json.dumps(
                    {"reason": reason, "error": error, "headers": message.headers, "body": json.loads(message.body)},
                    indent=2,
                    default=str,
                )
            )

    def _replay(self, producer: Producer, messages: list[Message]) -> None:
        if not messages:
            raise CommandError("Nothing to replay.")
        for message in messages:
            producer.publish(
                message.body,
                exchange=items_queue().exchange,
                routing_key=ITEMS_QUEUE,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                headers=messages.replay_headers(message.headers),
                delivery_mode=2,
                declare=[items_queue()],
            )  # confirmed before it returns (confirm_publish)
            message.ack()
            self.stdout.write(f"replayed {','.join(_item_ids(message))}")
        self.stdout.write(f"{len(messages)} message(s) back on the {ITEMS_QUEUE} queue")

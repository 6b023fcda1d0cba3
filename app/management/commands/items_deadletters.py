"""`manage.py items_deadletters list|show ID|replay ID|replay --all`: the dead-letter queue, for people."""

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kombu import Connection, Message, Producer

from app.messaging import messages
from app.messaging.queues import ITEMS_QUEUE, dead_letter_queue, items_queue


def _item_ids(message: Message) -> list[str]:
    try:
        return messages.item_ids(json.loads(message.body or b""))
    except ValueError:  # not JSON
        return ["?"]


def _why(message: Message) -> tuple[str, str]:
    headers = message.headers or {}
    if messages.REASON_HEADER in headers:
        return headers[messages.REASON_HEADER], headers.get(messages.ERROR_HEADER, "")
    # Dead-lettered by RabbitMQ itself: x-delivery-limit reached (the worker kept dying on it).
    deaths = headers.get("x-death")
    reason = deaths[0].get("reason", "unknown") if isinstance(deaths, list) and deaths else "unknown"
    return str(reason), "redelivered past the queue's x-delivery-limit"


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
            channel: Any = connection.channel()  # kombu's stubs lack most of a channel's methods
            dead_letter_queue(channel).declare()
            # Unacked gets: whatever we do not ack goes back to the queue when the channel closes.
            dead: list[Message] = []
            for _ in range(limit):
                message = dead_letter_queue(channel).get(no_ack=False, accept=["json"])
                if message is None:
                    break
                dead.append(message)
            if action == "list":
                self._list(dead)
            elif action == "show":
                self._show([m for m in dead if item_id in _item_ids(m)], str(item_id))
            else:
                chosen = dead if all else [m for m in dead if item_id in _item_ids(m)]
                self._replay(Producer(channel), chosen)
            channel.close()

    def _list(self, dead: list[Message]) -> None:
        self.stdout.write(f"{len(dead)} dead-lettered message(s)")
        for message in dead:
            reason, error = _why(message)
            when = (message.headers or {}).get(messages.DEAD_LETTERED_AT_HEADER)
            at = dt.datetime.fromtimestamp(float(when), tz=dt.UTC).isoformat(timespec="seconds") if when else "-"
            attempts = (message.headers or {}).get(messages.ATTEMPTS_HEADER, "-")
            self.stdout.write(f"{','.join(_item_ids(message))}\t{reason}\tattempts={attempts}\t{at}\t{error[:120]}")

    def _show(self, dead: list[Message], item_id: str) -> None:
        if not dead:
            raise CommandError(f"No dead-lettered message for item {item_id}.")
        for message in dead:
            reason, error = _why(message)
            self.stdout.write(
                json.dumps(
                    {
                        "reason": reason,
                        "error": error,
                        "headers": message.headers,
                        "body": json.loads(message.body or b""),
                    },
                    indent=2,
                    default=str,
                )
            )

    def _replay(self, producer: Producer, dead: list[Message]) -> None:
        if not dead:
            raise CommandError("Nothing to replay.")
        for message in dead:
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
        self.stdout.write(f"{len(dead)} message(s) back on the {ITEMS_QUEUE} queue")

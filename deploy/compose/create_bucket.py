"""Create the tickets bucket of the compose stack (from the same IR_TICKETS__* settings as the
replicas), waiting up to a minute for the S3 server. Run once by the ``s3-init`` service."""

from __future__ import annotations

import sys
import time

from botocore.exceptions import BotoCoreError, ClientError

from incident_responder.backends.objects.s3 import make_s3_client
from incident_responder.settings import S3TicketSettings, load_settings


def main() -> int:
    tickets = load_settings(insecure_no_auth=True).tickets
    if not isinstance(tickets, S3TicketSettings):
        print("IR_TICKETS__KIND is not s3: nothing to create", file=sys.stderr)
        return 2
    client = make_s3_client(
        endpoint_url=tickets.endpoint_url,
        region=tickets.region,
        access_key_id=tickets.access_key_id.get_secret_value() or None,
        secret_access_key=tickets.secret_access_key.get_secret_value() or None,
        connect_timeout=tickets.connect_timeout,
        read_timeout=tickets.read_timeout,
        max_attempts=tickets.max_attempts,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            client.head_bucket(Bucket=tickets.bucket)
            print(f"bucket {tickets.bucket} exists")
            return 0
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                client.create_bucket(Bucket=tickets.bucket)
                print(f"bucket {tickets.bucket} created")
                return 0
            error: Exception = exc
        except BotoCoreError as exc:  # the server is not up yet
            error = exc
        if time.monotonic() > deadline:
            print(f"S3 at {tickets.endpoint_url} not ready: {error}", file=sys.stderr)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())

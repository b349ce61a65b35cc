"""Log normalization: header stripping, variable masking, fingerprints, robustness.

Every log line here is invented for these tests (formats follow the common layouts of
syslog, log4j, logcat, klog, Apache, nginx, ... but no line is copied from a dataset).
"""

from __future__ import annotations

import hashlib
import random
import re
import time

import pytest

from incident_responder.pipeline.normalize import (
    DEFAULT_HEADERS,
    DEFAULT_RULES,
    NORMALIZER_VERSION,
    LogNormalizer,
    NormalizedLog,
    Rule,
    erase_kinds,
    is_placeholder,
)

N = LogNormalizer()

# --------------------------------------------------------------------------- headers
# (name, raw line, expected template)
HEADER_ROWS: list[tuple[str, str, str]] = [
    ("no_header", "connection reset by peer", "connection reset by peer"),
    (
        "iso_t_zulu",
        "2024-02-11T08:15:42.123Z ERROR payment failed for order 5521",
        "payment failed for order <num>",
    ),
    ("iso_offset", "2024-02-11T08:15:42+02:00 INFO cache warmed in 3.5s", "cache warmed in <duration>"),
    (
        "iso_comma_ms_thread_logger",
        "2023-07-19 22:04:11,507 WARN [pool-3-thread-12] com.acme.billing.InvoiceJob: "
        "retrying invoice 88 after 250ms",
        "retrying invoice <num> after <duration>",
    ),
    (
        "iso_dash_level_bracket_dash",
        "2021-05-06 07:08:09,010 - ERROR [Listener-7:Election@112] - peer 4 unreachable at /10.9.8.7:3888",
        "peer <num> unreachable at /<ip>:<port>",
    ),
    (
        "syslog_host_prog_pid",
        "Mar  3 04:05:06 gw-edge-2 dhclient[811]: DHCPACK from 192.168.7.1 (xid=0x5a1b2c3d)",
        "DHCPACK from <ip> (xid=<hex>)",
    ),
    ("syslog_prog_no_pid", "Mar  3 04:05:06 gw-edge-2 cron: job backup finished", "job backup finished"),
    (
        "syslog_prog_with_parens",
        "Oct 30 11:00:01 bastion sudo(pam_unix)[4242]: session opened for user deploy by (uid=0)",
        "session opened for user <user> by (uid=<num>)",
    ),
    (
        "syslog_mac_style",
        "Feb  2 09:10:11 office-mbp-42 powerd[88]: Sleep assertion released by pid 611",
        "Sleep assertion released by pid <num>",
    ),
    (
        "yymmdd_hhmmss_pid_level_logger",
        "240211 081542 77 INFO fs.Replicator: replica 3 of chunk_99812 stored on 10.4.4.20:7000",
        "replica <num> of chunk_<num> stored on <ip>:<port>",
    ),
    (
        "record_fields_epoch_flag",
        "771204 rack-12 power supply 1262304000 1 fan tray removed",
        "fan tray removed",
    ),
    (
        "label_epoch_date_node_ts_level",
        "- 1262304001 2010.01.01 X11-Y2-Z3 2010-01-01-00.00.01.123456 X11-Y2-Z3 RAS MMCS ERROR "
        "ido packet timeout",
        "ido packet timeout",
    ),
    (
        "epoch_date_host_syslog",
        "- 1262304002 2010.01.01 cn17 Jan 1 00:00:02 cn17/cn17 ntpd[3091]: "
        "synchronized to 10.0.0.5, stratum 2",
        "synchronized to <ip>, stratum <num>",
    ),
    (
        "bracket_ctime_level_client",
        "[Thu Jan 07 10:11:12 2010] [error] [client 172.16.0.9] File does not exist: /srv/www/favicon.ico",
        "File does not exist: <path>",
    ),
    (
        "iso_level_thread_with_spaces",
        "2019-03-04 05:06:07,890 INFO [AsyncDispatcher event handler] org.example.mr.TaskImpl: "
        "attempt_1551234567890_0042_m_000003_0 Transitioned from NEW to UNASSIGNED",
        "attempt_<num>_<num>_m_<num>_<num> Transitioned from NEW to UNASSIGNED",
    ),
    (
        "pipe_separated",
        "20190304-05:06:07:890|Sensor_Step|4411|onStepCountChanged total=1200",
        "onStepCountChanged total=<num>",
    ),
    (
        "logfile_ts_pid_level_dotted_logger_req",
        "compute.log.2.2019-03-04_05:00:00 2019-03-04 05:06:07.890 4321 INFO nova.compute.claims "
        "[req-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b - - - - -] "
        "[instance: 11112222-3333-4444-5555-666677778888] Claim successful",
        "[instance: <uuid>] Claim successful",
    ),
    (
        "bracket_short_ts_program_dash",
        "[02.14 09:10:11] firefox.exe - api.example.org:443 open through proxy 10.1.1.1:8080 HTTPS",
        "<host>:<port> open through proxy <ip>:<port> HTTPS",
    ),
    (
        "slash_date_level_logger",
        "19/03/04 05:06:07 INFO storage.MemoryStore: Block broadcast_7 stored as values in memory "
        "(estimated size 12.5 KB, free 400.1 MB)",
        "Block broadcast_<num> stored as values in memory (estimated size <size>, free <size>)",
    ),
    (
        "iso_comma_capitalized_level",
        "2019-03-04 05:06:07, Info                  CBS    "
        "Session: 30512345_987654321 initialized by client Agent.",
        "CBS Session: <num>_<num> initialized by client Agent.",
    ),
    (
        "logcat",
        "02-14 09:10:11.123  1500  1622 W PackageManager: Failed to grant permission to uid 10077",
        "Failed to grant permission to uid <num>",
    ),
    (
        "klog",
        "W0214 09:10:11.123456    4711 controller.go:88] lease renewal took 1.2s",
        "lease renewal took <duration>",
    ),
    (
        "nginx_error",
        '2019/03/04 05:06:07 [crit] 812#812: *31 open() "/var/cache/x" failed (13: Permission denied)',
        "*<num> open() <quoted> failed (<num>: Permission denied)",
    ),
    (
        "logfmt",
        'ts=2024-02-11T08:15:42Z level=warn msg="disk almost full" free_pct=3',
        'msg="disk almost full" free_pct=<num>',
    ),
    (
        "python_logging_dashes",
        "2024-02-11 08:15:42,123 - billing.sync - ERROR - upstream 503 from https://api.example.com/v1/sync",
        "upstream <num> from <url>",
    ),
    ("python_logging_default", "ERROR:billing.sync:upstream unavailable", "upstream unavailable"),
    (
        "spring_boot",
        "2024-02-11 08:15:42.123  WARN 2211 --- [nio-8080-exec-4] c.a.s.OrderService : slow request 1520ms",
        "slow request <duration>",
    ),
    (
        "dmesg_uptime",
        "[  12.345678] eth0: link up, 1000 Mbps, full duplex",
        "eth<num>: link up, <num> Mbps, full duplex",
    ),
    ("level_only", "WARNING: low memory on worker 3", "low memory on worker <num>"),
    ("level_bracketed_lower", "[warn] disk almost full", "disk almost full"),
    (
        "day_month_year",
        "11-Feb-2024 08:15:42.123 SEVERE [main] org.example.Server.start Startup failed",
        "Startup failed",
    ),
    (
        "rfc5424",
        "<165>1 2024-02-11T08:15:42.003Z web-1.example.net nginx 2211 ID7 - upstream timed out",
        "upstream timed out",
    ),
    (
        "rfc3164_priority",
        "<34>Feb 11 08:15:42 web-1 login[77]: FAILED LOGIN 1 FROM tty3",
        "FAILED LOGIN <num> FROM tty<num>",
    ),
    ("header_only_line_kept", "2024-02-11T08:15:42Z", "<ts>"),
    # ---- layouts no single rule was written for: fields of a general shape, in any order
    ("iso_t_zone_then_message", "2024-02-11T08:15:42.5+01:00 cache flushed", "cache flushed"),
    (
        "pipes_slash_date_unpadded_time_host",
        "2024/02/11 8:5:3.42 | WARN | node-17 | disk almost full on /data",
        "disk almost full on <path>",
    ),
    (
        "semicolons_day_mon_year_pid",
        "11-Feb-2024 8:15:42;4411;ERROR;payment 42 failed",
        "payment <num> failed",
    ),
    (
        "tabs_epoch_worker_level",
        "1707639342\tworker-7\tINFO\tcache warmed in 3.5s",
        "cache warmed in <duration>",
    ),
    (
        "counter_bracket_ctime_thread_tag",
        "1042 [Feb 11 2024 8:15:42] [pool-2-thread-7] ERROR sync[311]: upstream unavailable",
        "upstream unavailable",
    ),
    (
        "pid_host_before_iso_zone",
        "4411 web-3.prod.example.net 2024-02-11T08:15:42.123+01:00 WARN billing.Sync: retry 3 scheduled",
        "retry <num> scheduled",
    ),
    (
        "epoch_millis_level_thread_address_dash",
        "1707639342123 ERROR [worker-4] 10.2.0.7 - payment 42 failed",
        "payment <num> failed",
    ),
    (
        "rfc1123_date_comma_fields",
        "Sun, 11 Feb 2024 08:15:42 GMT, node-17, ERROR, payment 42 failed",
        "payment <num> failed",
    ),
    (
        "fields_joined_by_pipes",
        "1042|node-17|4411|replica 3 of chunk_9 lost",
        "replica <num> of chunk_<num> lost",
    ),
    ("date_and_clock_as_two_fields", "2024-02-11 | 08:15:42.123 | INFO | cache warmed", "cache warmed"),
    ("clock_before_date", "8:15:42 PM 02/11/2024 node-17 disk full", "disk full"),
    ("us_date_am_pm", "2/11/2024 8:15:42 PM 4411 ERROR payment 42 failed", "payment <num> failed"),
    ("bracketed_epoch", "[1707639342] [web-3] sync stalled", "sync stalled"),
    ("lower_case_level_before_a_pipe", "2024-02-11 08:15:42 | warn | queue depth 900", "queue depth <num>"),
    (
        "key_value_fields_before_level",
        "2024-02-11T08:15:42Z host=web-3 pid=4411 ERROR payment 42 failed",
        "payment <num> failed",
    ),
    (
        "host_in_angle_brackets",
        "2024-02-11 08:15:42 [4411] <web-3> ERROR: payment 42 failed",
        "payment <num> failed",
    ),
    (
        "double_colon_separators",
        "20240211 081542 :: node-17 :: INFO :: cache warmed",
        "cache warmed",
    ),
    (
        "dashes_between_every_field",
        "10.2.0.7 - 1042 - 2024-02-11T08:15:42Z - node-17 - disk full",
        "disk full",
    ),
    ("compact_date_unpadded_clock", "[20240211 8:5:42 UTC] | worker-3 | disk full", "disk full"),
    ("short_date_time_without_seconds_zone", "11.02.2024 08:15 CET cache flushed", "cache flushed"),
    ("mmdd_time_without_seconds", "02-14 09:10 cache flushed", "cache flushed"),
    ("day_mon_year_minutes_zone", "11 Feb 2024 08:15 GMT cache flushed", "cache flushed"),
    ("date_alone_with_month_name", "11-Feb-2024 | cache flushed", "cache flushed"),
    ("epoch_seconds_then_message", "1707639342.25 cache flushed", "cache flushed"),
    ("epoch_microseconds_then_message", "1707639342123456 cache flushed", "cache flushed"),
    (
        "word_host_before_second_timestamp",
        "2024-02-11 08:15:42 gateway Feb 11 08:15:42 gateway sshd[12]: session closed",
        "session closed",
    ),
    (
        "nested_bracket_context",
        "2024-02-11 08:15:42 WARN [Peer[id=2]/0.0.0.0:2181:Follower@118] leader lost",
        "leader lost",
    ),
    (
        "word_field_joined_by_pipe_after_timestamp",
        "2024-02-11 08:15:42|StepCounter|count reset",
        "count reset",
    ),
    (
        "log_file_name_before_timestamp",
        "nova-api.log 2024-02-11 08:15:42.123 4411 INFO nova.osapi: request done",
        "request done",
    ),
    ("yymmdd_hhmmss_then_message", "240211 081542 cache flushed", "cache flushed"),
    ("compact_iso_basic_then_message", "20240211T081542.5Z cache flushed", "cache flushed"),
    ("compact_datetime_am_pm_zone", "20240211 08:15:42 PM UTC;node-17;disk full", "disk full"),
    ("logcat_date_with_zone", "[1042] | [02-11 8:15:42 UTC] | disk full", "disk full"),
    (
        "ruby_logger",
        "E, [2024-02-11T08:15:42.123456 #4411] ERROR -- billing: payment 42 failed",
        "payment <num> failed",
    ),
    (
        "monolog_channel_level",
        "[2024-02-11 08:15:42] production.ERROR: payment 42 failed",
        "payment <num> failed",
    ),
    ("channel_level_without_colon", "[2024-02-11 08:15:42] app.WARNING disk almost full", "disk almost full"),
    (
        "syslog_word_host_program_no_pid",
        "Mar  3 04:05:06 gateway cron: job backup finished",
        "job backup finished",
    ),
    ("level_then_logger_without_timestamp", "WARN DbPool2: pool exhausted", "pool exhausted"),
    (
        "capitalized_word_after_timestamp_is_message",
        "2024-02-11 08:15:42 | Timeout: upstream 3",
        "Timeout: upstream <num>",
    ),
    (
        "program_tag_without_level",
        "2024-02-11 08:15:42.123 | node-7 | orbitd: antenna 3 parked",
        "antenna <num> parked",
    ),
    (
        "cri_container_stream",
        "2024-02-11T08:15:42.123456789Z stderr F payment 42 failed",
        "payment <num> failed",
    ),
    (
        "celery_bracket",
        "[2024-02-11 08:15:42,123: ERROR/ForkPoolWorker-3] payment 42 failed",
        "payment <num> failed",
    ),
    (
        "value_after_dash_is_message",
        "2024-02-11 08:15:42 - ERROR [main] - node-7 unreachable",
        "node-<num> unreachable",
    ),
    (
        "bluegene_dash_datetime_first",
        "2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO cache parity corrected",
        "cache parity corrected",
    ),
]

# --------------------------------------------------------------------------- masking
MASK_ROWS: list[tuple[str, str, str]] = [
    ("int", "retry 3 of 10", "retry <num> of <num>"),
    ("negative", "offset -42 applied", "offset <num> applied"),
    ("float", "load average 0.75", "load average <num>"),
    ("hex_prefixed", "fault at 0x7ffdeadbeef", "fault at <hex>"),
    ("hex_long", "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 deployed", "commit <hex> deployed"),
    ("uuid", "request 123e4567-e89b-12d3-a456-426614174000 done", "request <uuid> done"),
    ("ipv4", "peer 10.0.0.12 down", "peer <ip> down"),
    ("ipv4_port", "dial 10.0.0.12:5432 refused", "dial <ip>:<port> refused"),
    ("ipv4_cidr", "route 10.8.0.0/16 withdrawn", "route <ip> withdrawn"),
    ("slash_ipv4", "read from /10.0.0.12 failed", "read from /<ip> failed"),
    ("ipv6", "listen on fe80::1ff:fe23:4567:890a failed", "listen on <ip> failed"),
    ("ipv6_with_port", "quorum peer 0:0:0:0:0:0:0:0:2181 bound", "quorum peer <ip>:<port> bound"),
    ("ipv6_bracket_port", "connect [2001:db8::1]:443 timeout", "connect <ip>:<port> timeout"),
    ("port_word", "bind port 8080 in use", "bind port <num> in use"),
    ("path", "cannot open /etc/app/config.yaml", "cannot open <path>"),
    ("path_with_date_inside", "rotated /var/log/app/2024-02-11.log", "rotated <path>"),
    ("windows_path", "cannot open C:\\ProgramData\\App\\app.ini", "cannot open <path>"),
    ("url", "GET https://api.example.com/v2/items?id=7 failed", "GET <url> failed"),
    ("email", "mail to ops-team@example.com bounced", "mail to <email> bounced"),
    ("host", "resolved db.internal.example.com", "resolved <host>"),
    ("host_port", "upstream cache-3.example.net:6379 down", "upstream <host>:<port> down"),
    ("file_name_is_not_host", "loading setup.py", "loading setup.py"),
    ("mac", "new client aa:bb:cc:dd:ee:ff", "new client <mac>"),
    ("duration_ms", "took 15ms", "took <duration>"),
    ("duration_float_s", "timeout after 2.5s", "timeout after <duration>"),
    ("duration_words", "waited 30 seconds", "waited <duration>"),
    ("duration_compound", "uptime 3h12m5s", "uptime <duration>"),
    ("size_attached", "wrote 64MB", "wrote <size>"),
    ("size_spaced_iec", "heap 1.2 GiB", "heap <size>"),
    ("size_bytes", "read 4096 bytes", "read <size>"),
    ("quoted_single", "unknown key 'max_conns' in config", "unknown key <quoted> in config"),
    ("quoted_double", 'bucket "logs-eu-1" not found', "bucket <quoted> not found"),
    ("quoted_with_spaces_keeps_words", 'reason "quota exceeded" for 7', 'reason "quota exceeded" for <num>'),
    ("escaped_quotes", 'Component \\"disk-7\\" failed', "Component <quoted> failed"),
    ("apostrophe_is_not_a_quote", "can't reach worker's queue", "can't reach worker's queue"),
    ("key_value_numbers", "retries=5 backoff=200", "retries=<num> backoff=<num>"),
    ("key_value_bool", "enabled=true cached: false", "enabled=<bool> cached: <bool>"),
    ("id_with_negative_number", "blk_-4823 lost", "blk_<num> lost"),
    ("id_with_numbers", "job_1700000000000_0042 killed", "job_<num>_<num> killed"),
    ("id_letters_digits", "node-17 and rack4 offline", "node-<num> and rack<num> offline"),
    ("date_iso_in_message", "certificate expires on 2025-01-31", "certificate expires on <ts>"),
    ("date_ctime_in_message", "backup from Fri Jan 31 23:59:59 2025 restored", "backup from <ts> restored"),
    ("date_time_spaced_in_message", "last seen 2025-01-31 23:59:59 UTC", "last seen <ts> UTC"),
    ("user_word", "Invalid user oracle from 10.1.1.1", "Invalid user <user> from <ip>"),
    (
        "user_for_from",
        "Accepted publickey for deploy from 10.1.1.1 port 22 ssh2",
        "Accepted publickey for <user> from <ip> port <num> ssh<num>",
    ),
    (
        "user_kv",
        "auth failure; tty=pts rhost=10.1.1.1 user=alice",
        "auth failure; tty=pts rhost=<ip> user=<user>",
    ),
    ("user_prose_kept", "no more user authentication methods", "no more user authentication methods"),
    ("list_of_numbers", "fan rpm ( 3100 3120 3090 )", "fan rpm ( <num> )"),
    ("list_of_ips", "retrying hosts [10.0.0.1, 10.0.0.2, 10.0.0.3]", "retrying hosts [<ip>]"),
    ("run_of_same_token", "stack @0x7f01 @0x7f02 @0x7f03 end", "stack @<hex> end"),
    ("version_word", "agent version 1.2.3.4 started", "agent version <num> started"),
    ("version_v", "Loaded plugin v2.10.1", "Loaded plugin v<num>"),
    ("http_request_line", '10.0.0.1 "GET /api/v1/users HTTP/1.1" 200', '<ip> "GET <path> HTTP/<num>" <num>'),
    ("k8s_pod", "pod api-7d4b9c8f6-xkq7z restarted", "pod api-<id> restarted"),
    (
        "k8s_pod_digit_in_suffix",
        "Back-off restarting checkout-5f9c7d6b8d-k2x4p:",
        "Back-off restarting checkout-<id>:",
    ),
    ("hyphenated_words_kept", "header x-forwarded-proto missing", "header x-forwarded-proto missing"),
    ("unicode_words_kept", "échec de connexion à la base", "échec de connexion à la base"),
]

# Honest limitations: these rows describe what we WOULD want, and are known to fail.
KNOWN_MISSES: list[tuple[str, str, str]] = [
    ("name_without_keyword", "login failed for bob", "login failed for <user>"),
    ("hostname_without_dots", "node web03 unreachable", "node <host> unreachable"),
    ("multi_word_quoted_value", 'error "connection reset by peer"', "error <quoted>"),
    ("dotted_version_reads_as_ip", "compiled with 1.2.3.4", "compiled with <num>"),
    ("hex_id_without_digits", "object deadbeefcafe freed", "object <hex> freed"),
    ("month_day_without_time", "expires Jan 31, 2025", "expires <ts>"),
    ("unlabelled_words_after_timestamp", "2024-02-11 08:15:42 Error reading disk", "Error reading disk"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), HEADER_ROWS, ids=[r[0] for r in HEADER_ROWS])
def test_header_formats(name: str, raw: str, expected: str) -> None:
    assert N.normalize(raw).template == expected


@pytest.mark.parametrize(("name", "raw", "expected"), MASK_ROWS, ids=[r[0] for r in MASK_ROWS])
def test_masking(name: str, raw: str, expected: str) -> None:
    assert N.normalize(raw).template == expected


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        pytest.param(*row, marks=pytest.mark.xfail(strict=True, reason="known limitation"))
        for row in KNOWN_MISSES
    ],
    ids=[r[0] for r in KNOWN_MISSES],
)
def test_known_misses(name: str, raw: str, expected: str) -> None:
    assert N.normalize(raw).template == expected


def test_every_rule_and_header_rule_is_exercised() -> None:
    """Each rule in the tables changes at least one row (dead rules would hide here)."""
    texts = [raw for _, raw, _ in HEADER_ROWS + MASK_ROWS]
    for rule in DEFAULT_RULES:
        reduced = LogNormalizer(rules=[r for r in DEFAULT_RULES if r.name != rule.name])
        assert any(reduced.normalize(t).template != N.normalize(t).template for t in texts), rule.name
    for header in DEFAULT_HEADERS:
        reduced = LogNormalizer(header_rules=[h for h in DEFAULT_HEADERS if h.name != header.name])
        assert any(reduced.normalize(t).message != N.normalize(t).message for t in texts), header.name


# --------------------------------------------------------------------------- message
def test_message_keeps_values_and_drops_header() -> None:
    norm = N.normalize(
        "Mar  3 04:05:06 gw-edge-2 sshd[811]:   Failed password for root from 10.0.0.9   port 22"
    )
    assert norm.message == "Failed password for root from 10.0.0.9 port 22"
    assert norm.template == "Failed password for <user> from <ip> port <num>"


def test_embed_text_is_template_without_placeholders() -> None:
    norm = N.normalize("peer 10.0.0.12 down after 15ms (retry 3)")
    assert norm.embed_text == "peer down after (retry )"
    assert "<" not in norm.embed_text


def test_multiline_alert_keeps_line_structure() -> None:
    alert = (
        "[FIRING:2] DiskAlmostFull (prod node-7 critical)\n"
        "\n"
        "Labels:\n"
        " - alertname = DiskAlmostFull\n"
        " - instance = 10.2.0.7:9100\n"
        "Annotations:\n"
        " - description = Filesystem /data on 10.2.0.7:9100 has 3.5% space left.\n"
        "Source: http://prometheus:9090/graph?g0.expr=x"
    )
    norm = N.normalize(alert)
    assert norm.template.split("\n") == [
        "[FIRING:<num>] DiskAlmostFull (prod node-<num> critical)",
        "Labels:",
        "- alertname = DiskAlmostFull",
        "- instance = <ip>:<port>",
        "Annotations:",
        "- description = Filesystem <path> on <ip>:<port> has <num>% space left.",
        "Source: <url>",
    ]
    assert len(norm.message.split("\n")) == 7


def test_stack_trace_lines_are_normalized_each() -> None:
    trace = (
        "2024-02-11 08:15:42,123 ERROR [main] com.acme.App: request failed\n"
        "java.lang.IllegalStateException: pool exhausted (size 32)\n"
        "\tat com.acme.db.Pool.take(Pool.java:118)\r\n"
        "\tat com.acme.App.handle(App.java:42)"
    )
    assert N.normalize(trace).template == (
        "request failed\n"
        "java.lang.IllegalStateException: pool exhausted (size <num>)\n"
        "at com.acme.db.Pool.take(Pool.java:<num>)\n"
        "at com.acme.App.handle(App.java:<num>)"
    )


# --------------------------------------------------------------------------- properties
SAME_TEMPLATE = [
    (
        "2024-02-11T08:15:42Z INFO [w-1] app.Worker: job 17 done in 15ms on 10.0.0.1",
        "2025-12-31T23:59:59Z INFO [w-9] app.Worker: job 90210 done in 2.5s on 192.168.100.200",
    ),
    (
        "Jun  1 00:00:01 host-a sshd[1]: Invalid user alice from 10.0.0.1",
        "Dec 31 23:59:59 host-b sshd[65000]: Invalid user bob from 172.16.5.4",
    ),
    (
        "connection from 10.0.0.1 (a-1.example.com) at Mon Jan  1 00:00:00 2024",
        "connection from 10.0.0.2 (b-2.example.net) at Tue Feb 27 13:14:15 2024",
    ),
    ("blk_-123 replicated to /10.0.0.1:50010", "blk_98765 replicated to /10.0.0.2:50010"),
    (
        "request 123e4567-e89b-12d3-a456-426614174000 done",
        "request 00000000-0000-0000-0000-00000000abcd done",
    ),
]
DIFFERENT_TEMPLATE = [
    ('10.0.0.1 "GET /v2/servers HTTP/1.1" status: 200', '10.0.0.1 "POST /v2/servers HTTP/1.1" status: 200'),
    ("[instance: 1-2] VM Paused (Lifecycle Event)", "[instance: 1-2] VM Started (Lifecycle Event)"),
    (
        "authentication failure; logname= uid=0 rhost=10.0.0.1",
        "authentication failure; logname= uid=0 rhost=10.0.0.1 user=root",
    ),
    ("Accepted password for bob from 10.0.0.1 port 22", "Failed password for bob from 10.0.0.1 port 22"),
    ("fan speeds ( 3100 3120 **** 3090 )", "fan speeds ( 3100 3120 3110 3090 )"),
    ("link up on eth0", "link down on eth0"),
]


@pytest.mark.parametrize(("a", "b"), SAME_TEMPLATE)
def test_lines_differing_only_in_values_share_template_and_fingerprint(a: str, b: str) -> None:
    na, nb = N.normalize(a), N.normalize(b)
    assert na.template == nb.template
    assert na.fingerprint == nb.fingerprint
    assert na.message != nb.message


@pytest.mark.parametrize(("a", "b"), DIFFERENT_TEMPLATE)
def test_lines_differing_in_meaning_keep_different_templates(a: str, b: str) -> None:
    na, nb = N.normalize(a), N.normalize(b)
    assert na.template != nb.template
    assert na.fingerprint != nb.fingerprint


def test_fingerprint_is_sha256_of_kind_erased_template() -> None:
    norm = N.normalize("peer 10.0.0.12 down")
    assert erase_kinds(norm.template) == "peer <*> down"
    assert norm.fingerprint == hashlib.sha256(b"peer <*> down").hexdigest()[:32]
    assert re.fullmatch(r"[0-9a-f]{32}", norm.fingerprint)


def test_fingerprint_ignores_placeholder_kind() -> None:
    # the same slot holding an address or a host name is the same event
    assert (
        N.normalize("rhost=10.0.0.1 failed").fingerprint
        == N.normalize("rhost=a.example.com failed").fingerprint
    )


def test_fingerprint_is_stable_across_instances_and_pinned() -> None:
    line = "2024-02-11T08:15:42Z ERROR payment 42 failed"
    assert LogNormalizer().normalize(line) == LogNormalizer().normalize(line)
    # Pinned: if this changes, templates changed -> bump NORMALIZER_VERSION.
    assert N.normalize(line).fingerprint == hashlib.sha256(b"payment <*> failed").hexdigest()[:32]
    assert NORMALIZER_VERSION


def test_arbitrary_unicode_and_control_characters_never_raise() -> None:
    rng = random.Random(20261126)
    alphabet = (
        [chr(c) for c in range(0, 0x80)]
        + [
            "\u00a0",
            "\u200b",
            "\u2028",
            "\u2029",
            "\ufeff",
            "\u202e",
            "\x85",
            "\ud800",
            "\udfff",
            "é",
            "漢",
            "🙂",
        ]
        + [" ", "\n", "\r", "\t", "<", ">", "\\", '"', "'", "[", "]", ":", "/", "="]
    )
    samples = ["", " ", "\n\n", "\x00", "<num>", "[", "\\", "'" * 50, "1" * 5000, "a" * 10000 + "\n" * 500]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(400)]
    for text in samples:
        norm = N.normalize(text)
        assert isinstance(norm, NormalizedLog)
        assert re.fullmatch(r"[0-9a-f]{32}", norm.fingerprint)
        assert "\x00" not in norm.template


def test_empty_and_blank_reports() -> None:
    assert N.normalize("").template == ""
    assert N.normalize(" \n\t\n").template == ""
    assert N.normalize("").fingerprint == N.normalize("\n\n").fingerprint


def test_very_long_report_is_bounded() -> None:
    norm = N.normalize("\n".join(f"line {i} value {i * 7}" for i in range(5000)))
    assert norm.template.count("\n") < 250


def test_placeholder_helpers() -> None:
    assert is_placeholder("<ip>") and is_placeholder("<num>")
    assert not is_placeholder("<ok>") and not is_placeholder("x<num>")
    assert erase_kinds("a <ip>:<port> <ok>") == "a <*>:<*> <ok>"


def test_rules_are_data() -> None:
    custom = LogNormalizer(rules=[Rule("ticket", r"\bTKT-\d+\b", "<num>")], header_rules=())
    norm = custom.normalize("2024-02-11 opened TKT-991 for 10.0.0.1")
    assert norm.template == "2024-02-11 opened <num> for 10.0.0.1"
    with pytest.raises(ValueError, match="plain text"):
        LogNormalizer(rules=[Rule("bad", r"(a)", r"\1")])


def test_normalize_is_fast() -> None:
    # generous bound (CI machines vary); the real figure is printed by scripts/tune_dedup.py --bench
    lines = [
        f"2024-02-11T08:15:{i % 60:02d}.123Z INFO [worker-{i % 7}] app.queue.Consumer: processed batch {i} "
        f"from 10.2.{i % 250}.4:5672 in {i % 90}ms (queue='orders-{i % 5}', size {i % 64}MB) id=req-{i:08x}"
        for i in range(300)
    ]
    normalizer = LogNormalizer()
    started = time.perf_counter()
    for line in lines:
        normalizer.normalize(line)
    assert (time.perf_counter() - started) / len(lines) < 0.002


def test_the_token_memo_is_kept_per_scope() -> None:
    normalizer = LogNormalizer()
    first = normalizer.normalize("job 0x1f2e failed on node-7", "acme")
    assert {scope for scope, _ in normalizer._token_cache} == {"acme"}
    # Another tenant computes its own entries (the same result), never reading acme's.
    assert normalizer.normalize("job 0x1f2e failed on node-7", "globex") == first
    assert {scope for scope, _ in normalizer._token_cache} == {"acme", "globex"}

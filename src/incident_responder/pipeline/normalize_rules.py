"""The normalizer's rule tables: plain data to review, extend and version.

* ``DEFAULT_HEADERS`` (:class:`HeaderRule`) peel the line header off the front of each
  line, one anchored match at a time: timestamps in the common formats, epoch numbers,
  log levels, pids and thread names, ``host process[pid]:`` syslog prefixes, logger
  names. A rule may require that an earlier rule of some *kind* already matched, which
  is what keeps e.g. "a bare number is a pid" from firing on a message that merely
  starts with a number. The rules read fields of a general shape rather than whole
  known layouts (see the comment at the table), so that headers of systems nobody wrote
  a rule for come off too.
* ``DEFAULT_RULES`` (:class:`Rule`) mask the variable parts of the remaining message
  with named placeholders (``<num>``, ``<ip>``, ``<path>`` ...). Priority matters: see
  the comments at the table.
* ``STATE_WORDS``: the words that say what happened (``down``, ``'Inactive'``,
  ``"on-wake"``, ``deregistered``); no rule masks one, in the header or in the message.

Bump ``NORMALIZER_VERSION`` whenever a rule changes: templates and fingerprints made by
different versions are not compared (see ``pipeline.matching``), and ``reindex`` brings
stored tickets to the current version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

NORMALIZER_VERSION: Final = "2026-12-03.1"


@dataclass(frozen=True)
class Rule:
    """One masking rule: a match of ``pattern`` is replaced by ``replacement``.

    ``scope`` says where it runs:

    * ``"token"`` (the default): inside one whitespace-separated token. All token rules
      are merged into ONE alternation (in table order) that scans each token once; where
      two rules could match at the same place, the earlier one in the table wins. Their
      replacement must be a plain string (no back-references).
    * ``"text"``: over the whole message, before the token pass, in table order (values
      that span tokens, or that need the word before them: ``user alice``).
    * ``"template"``: over the masked template, after the token pass (joins placeholders
      that belong together: ``Jun <num> <ts>`` -> ``<ts>``).

    ``hint``: the rule only runs where at least one of these substrings occurs (empty:
    always). Token rules: in the token, ``DIGIT`` standing for any digit. Text rules: in
    the lower-cased message, so their hints are written in lower case. Template rules:
    in the template. A cheap pre-check that skips most rules on most inputs.
    """

    name: str
    pattern: str
    replacement: str
    scope: Literal["token", "text", "template"] = "token"
    hint: tuple[str, ...] = ()
    flags: int = 0


DIGIT: Final = "<digit>"  # hint: the token holds a digit


@dataclass(frozen=True)
class HeaderRule:
    """One header element, matched anchored at the current position of a line.

    ``kind`` is what the element is ("ts", "level", "ctx", "tag"; several separated by
    spaces, e.g. "ts syslog" for a syslog timestamp). ``after`` lists kinds
    of which at least one must already have been stripped from this line (empty: the
    rule may fire at the very start). A ``final`` rule ends the header: the message
    starts right after it. The pattern must consume the trailing whitespace.
    """

    name: str
    pattern: str
    kind: str
    after: tuple[str, ...] = ()
    final: bool = False
    flags: int = 0


# --------------------------------------------------------------------------- state words
# Words that say what happened, or which state something is in. A value next to one is masked,
# the word itself never is, quoted or not ('Active' / 'Inactive', "on-wake", status=down, user
# locked): masking it would make two different incidents one. A stem takes the usual negating
# and phase prefixes (in-active, un-available, de-register, dis-connected, non-responsive,
# not-ready, re-started, on-sleep, pre-start, post-stop, auto-recovered). Used only in
# lookaheads (case-insensitive, never across whitespace); ``normalize.is_state_word`` reads a
# single template token with it.
_STATE_STEMS = (
    r"up|down|on|off|online|offline|open|opened|opening|close|closed|closing|start|started|starting"
    r"|stop|stopped|stopping|run|running|halted|pause|paused|resume|resumed|suspend|suspended"
    r"|active|activate|activated|enable|enabled|enabling|disable|disabled|disabling|available|healthy"
    r"|ready|valid|alive|dead|live|idle|busy|connect|connected|connecting|mount|mounted|attach|attached"
    r"|detach|detached|lock|locked|register|registered|sleep|sleeping|asleep|wake|awake|waking|woken"
    r"|success|succeeded|successful|fail|failed|failure|failing|pass|passed|ok|okay|error|degraded"
    r"|normal|critical|warning|pending|complete|completed|done|accept|accepted|reject|rejected|allow"
    r"|allowed|deny|denied|grant|granted|revoke|revoked|block|blocked|create|created|delete|deleted"
    r"|add|added|remove|removed|join|joined|leave|left|login|logout|logged|install|installed|load"
    r"|loaded|reachable|responsive|known|found|expired|synced|initialized|terminated|killed"
    r"|crashed|recovered|resolved|firing|true|false|yes|no|primary|secondary|leader|follower"
    r"|standby|full|empty|high|low|in|out|set|reset|clear|cleared"
)
STATE_WORDS: Final = (
    r"(?:(?:in|un|de|dis|non[-_]?|re|not[-_]?|on[-_]|pre[-_]?|post[-_]?|auto[-_]?)?(?:" + _STATE_STEMS + r"))"
)
_STATE = r"(?i:" + STATE_WORDS + r")"  # as a lookahead piece: follow it with what must come next

# --------------------------------------------------------------------------- header
# Headers are read as a sequence of *fields*: each rule below takes one element off the front
# of the line together with the separator after it (whitespace, "|", ";", ", ", " - ", " :: "), so that
# the same rules read "ts level host msg", "ts | level | host | msg", "ts;pid;level;msg" and
# "ts, host, level, msg" alike. A date and a time may come as one element or as two
# ("date", "clock"), in any of the common styles, padded or not ("9:5:3"). Value-like fields
# (numbers, hosts and thread names holding a digit, addresses) that come before a timestamp or
# a level ("lead_fields"), or after one ("value_field"), vary from report to report the way
# timestamps, counters, pids and hosts do: they are header, never message.
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_DOW = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?"
_AMPM = r"(?:\s?[AaPp]\.?[Mm]\.?(?![\w.]))?"
_TIME = r"\d{1,2}:\d{1,2}(?::\d{1,2})?(?:[.,:]\d{1,9})?" + _AMPM  # padded or not: 09:05:03, 9:5:3
_HMS = r"\d{1,2}:\d{1,2}:\d{1,2}(?:[.,]\d{1,9})?" + _AMPM  # a clock with seconds (a time on its own)
_ZONE = r"(?:\s?(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT|[ECMP][SD]T|CES?T|JST|KST|IST|BST|MSK|AES?T|HKT|SGT)(?![\w:]))?"
# a calendar date on its own: 2024-01-05, 2024/1/5, 05.01.2024, 1/5/24, 05-Jan-2024, 5 Jan 2024,
# Jan 5 2024, Jan 5, 2024, 2024-Jan-05, 20240105 (the digit-only forms never run into a fourth dotted part,
# which would make them an address)
_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?![\d.])"
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})(?![\d.])"
    r"|\d{1,2}[-/ ]" + _MON + r"[-/ ,]{1,2}(?:19|20)\d\d(?!\d)"
    r"|" + _MON + r"[-/ ]\d{1,2},?[ ](?:19|20)\d\d(?!\d)"
    r"|(?:19|20)\d\d[-/ ]" + _MON + r"[-/ ]\d{1,2}(?!\d)"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d))"
)
_LEVELS_UP = (
    r"TRACE|DEBUG|DBG|INFO|INF|NOTICE|WARN|WRN|WARNING|ERROR|ERR|SEVERE|FATAL|CRITICAL|CRIT|ALERT|EMERG"
    r"|EMERGENCY|FAILURE|VERBOSE"
)
_LEVELS_CAP = (
    r"Trace|Debug|Info|Information|Notice|Warn|Warning|Error|Severe|Fatal|Critical|Alert|Emergency|Verbose"
)
_LEVELS_LOW = r"trace|debug|info|notice|warn|warning|error|err|crit|critical|alert|emerg|fatal|severe"
_LEVELS_ALL = _LEVELS_UP + "|" + _LEVELS_CAP + "|" + _LEVELS_LOW
_AHEAD = r"(?=[\s|;,]|$)"  # a header field ends at whitespace, a separator or the end of the line
# every header element swallows the separator after it: whitespace, "|" or ";" (spaces around
# them or not), ", ", or a spaced " - ", " :: ", " > ", " >> ", " -- "
_END = r"(?:\s*+[|;]\s*+|\s(?:-{1,3}|::?|>{1,2}|»)\s|,?\s+|$)"
_NOT_A_STATE_TAG = r"(?!" + _STATE + r"\s*:)"  # "Disconnected:" starts a message, never tags it
_HOST = r"[\w.@/:-]++"  # host names in headers: dn228, node-7, local@host, host/host
_TAG = r"[A-Za-z_/.][\w./@()-]*+"  # syslog program: sshd, sshd(pam_unix), /usr/sbin/cron, com.apple.x
# a field that varies the way counters, pids, hosts and thread names do: a token holding a digit
# (4411, node-17, 10.0.0.7, pool-2-thread-7, host7.dc1), anything in brackets but a level, or a
# host in angle brackets (<node-7>); never "key=value", never a token ending in ":" (a tag:
# "eth0:", "sshd[12]:"). A level is left to the level rules: what may follow a level (a logger
# name) depends on having seen one.
_NOT_A_LEVEL = r"(?!(?:" + _LEVELS_ALL + r")\])"
_VALUE_FIELD = (
    r"(?:(?=[^\s|;,=]{0,63}\d)\w[^\s|;,=\[\]()\"'<>]{0,63}+(?<!:)"
    r"|\[" + _NOT_A_LEVEL + r"[^\[\]\n]{0,64}\]"
    r"|<(?=[^<>\s]{0,63}\d)[^<>\s]{1,64}>)"
)
# a "key=value" header field whose value holds a digit: host=web-3, pid=4411
_KV_FIELD = r"[A-Za-z_][\w.-]{0,31}=(?=[^\s|;,]{0,63}\d)[^\s|;,]{1,64}+"
# where a timestamp starts (what value-like leading fields may stand before)
_TS_AHEAD = (
    r"(?=\[?(?:"
    + _DOW
    + r"\s|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?![\d.])|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}(?![\d.])"
    r"|\d{1,2}[-/ ]" + _MON + r"[-/ ]|" + _MON + r"\s\d{1,2}(?!\d)|\d{1,2}:\d{1,2}:\d{1,2}(?!\d)"
    r"|1\d{9}(?:\d{3})?(?![\d:])|\d{6}\s\d{6}(?!\d)|(?:19|20)\d{6}[T\s_-]\d|\d{2}-\d{2}\s\d{1,2}:"
    r"|(?<=\[)[^\]\n]{0,40}\d{1,2}:\d{1,2}:\d{1,2}|(?:" + _LEVELS_UP + r")\]?" + _AHEAD + r"))"
)

# Order matters only between rules that can match at the same place: longer and more
# specific forms first (a full ISO date-time before a bare date, a syslog tag before a
# bare hostname, the record+epoch form before a bare number).
DEFAULT_HEADERS: Final[tuple[HeaderRule, ...]] = (
    # ---- timestamps (may start a line) ----
    # klog (Kubernetes/glog): "E0614 15:16:01.123456    1234 file.go:123] msg" - one unit, ends the header.
    HeaderRule(
        "klog", r"[IWEF]\d{4}\s+\d{2}:\d{2}:\d{2}(?:\.\d+)?\s+\d+\s+[\w./-]+:\d+\]" + _END, "ts", final=True
    ),
    # syslog RFC 5424 "<34>1 TS HOST APP PROCID MSGID SD " as one unit, and the RFC 3164 priority "<34>"
    HeaderRule(
        "rfc5424",
        r"<\d{1,3}>\d{1,2}\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(?:-|(?:\[[^\]\n]*\])+)" + _END,
        "ts",
        final=True,
    ),
    HeaderRule("syslog_pri", r"<\d{1,3}>(?=\S)", "ctx"),
    # Ruby Logger: "E, [2024-01-05T09:05:03.123456 #4411] ERROR -- progname: message" as one unit
    HeaderRule(
        "ruby_logger", r"[DIWEFAU],\s\[[^\[\]\n]{1,80}\]\s+[A-Z]+\s--\s[^:\n]{0,80}:" + _END, "ts", final=True
    ),
    # a log file name carrying its rotation date, before the timestamp: "api.log.1.2017-05-16_13:53:08 ..."
    # (the lookahead finds ".log" once, then the name is taken whole: never re-split at each ".log")
    HeaderRule("logfile", r"(?=[\w.-]*?\.log(?:\.|\s))[\w.:-]++(?=\s+\d{4}-\d{2}-\d{2})" + _END, "ctx"),
    # any bracketed element that holds a clock time, a date or an epoch: [Sun Dec 04 04:47:44 2005],
    # [10.30 16:49:06], [2024/01/05 9:5:3], [1704413103]
    HeaderRule(
        "bracket_ts",
        r"\[[^\]\n]{0,40}(?:\d{1,2}:\d{1,2}:\d{1,2}|\d{4}-\d{2}-\d{2})[^\]\n]{0,40}\][:,]?"
        + _END
        + r"|\[\s?1\d{9}(?:\d{3}|[.,]\d{1,9})?\s?\][:,]?"
        + _END,
        "ts",
    ),
    # ISO-8601 and friends: 2015-10-18 18:01:47,978 / 2024-01-02T03:04:05.123Z / 2016-09-28 04:30:30,
    HeaderRule(
        "iso_datetime",
        r"\[?\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T\s_-]+|:)" + _TIME + _ZONE + r"\]?[,:]?" + _END,
        "ts",
    ),
    # BlueGene style 2005-06-03-15.42.50.675872
    HeaderRule("dash_datetime", r"\d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}(?:\.\d+)?" + _END, "ts"),
    # compact 20171223-22:15:29:606 / 20240102T030405Z
    HeaderRule(
        "compact_datetime",
        r"(?:19|20)\d{6}[-T\s]?\d{2}:?\d{2}:?\d{2}(?:[.,:]\d{1,9})?" + _AMPM + _ZONE + _END,
        "ts",
    ),
    # yymmdd hhmmss (HDFS-style "081109 204132")
    HeaderRule("yymmdd_hhmmss", r"\d{6}\s\d{6}(?:[.,]\d+)?" + _ZONE + _END, "ts"),
    # 17/06/09 20:10:40, 06/14/2024 15:16:01, 14.06.2024 15:16:01, 1/5/2024 9:05:03 AM
    HeaderRule("short_datetime", r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}[\s,T]+" + _TIME + _ZONE + _END, "ts"),
    # Android logcat: 03-17 16:13:38.811
    HeaderRule("mmdd_time", r"\d{2}-\d{2}\s+" + _TIME + _ZONE + _END, "ts"),
    # syslog / ctime: "Jun 14 15:16:01", "Fri Jun 17 07:07:00 2005", "Jun 14 2024 15:16:01"
    HeaderRule(
        "syslog_ts",
        r"(?:"
        + _DOW
        + r"\s+)?"
        + _MON
        + r"\s+\d{1,2},?(?:\s+\d{4})?\s+"
        + _TIME
        + _ZONE
        + r"(?:\s+\d{4}(?!\d))?:?"
        + _END,
        "ts syslog",
    ),
    # "14 Jun 2024 15:16:01", "Fri, 14 Jun 2024 15:16:01 GMT" (RFC 1123), "05-Jan-2024 9:05:03"
    HeaderRule(
        "day_mon_year",
        r"(?:" + _DOW + r"\s+)?\d{1,2}[\s/-]" + _MON + r"[\s/-]\d{4}[\s:]+" + _TIME + _ZONE + _END,
        "ts",
    ),
    # kernel ring buffer "[ 1234.567890]"
    HeaderRule("bracket_uptime", r"\[\s*\d+\.\d+\]" + _END, "ts"),
    # a date on its own field, in any common style (a clock may follow as a field of its own)
    HeaderRule("date", r"(?:" + _DOW + r"\s+)?" + _DATE + _AHEAD + _END, "ts"),
    # a clock on its own field: "9:05:03 AM", "09:05:03.123 +01:00" (also before the date)
    HeaderRule("clock", _HMS + _ZONE + _AHEAD + _END, "ts"),
    # a record number, up to four source fields and an epoch: "134681 node-246 unix.hw state 1077804742 1 msg"
    HeaderRule("record_epoch", r"\d++\s+(?:\S++\s+){0,4}?1\d{9}(?:\.\d+)?(?=\s|$)" + _END, "ts"),
    # alert label or "-" in front of an epoch: "- 1117838570 ..." / "KERNDTLB 1117838570 ..."
    HeaderRule("label_epoch", r"(?:-|[A-Z][A-Z0-9_]*)\s+(?=1\d{9}\s)", "ctx"),
    # epoch seconds (2001..2033), with a fraction, or in milli-, micro- or nanoseconds
    HeaderRule(
        "epoch", r"1\d{9}(?:[.,]\d{1,9})?" + _AHEAD + _END + r"|1\d{12}(?:\d{3}){0,2}" + _AHEAD + _END, "ts"
    ),
    # logfmt header keys
    HeaderRule(
        "logfmt_header",
        r"(?:time|ts|timestamp|t|date|level|lvl|severity|caller|logger|pid|tid|thread)=(?:\"[^\"\n]*\"|\S+)"
        + _END,
        "ts",
    ),
    # value-like fields in front of a timestamp or a level: "4411 node-7 2024-01-05T...",
    # "1000|node-297|40874|Jun 14 ...", "[pool-1-thread-3] 2024-01-05 ...", "host=web-3 pid=7 INFO"
    HeaderRule(
        "lead_fields", r"(?:(?:" + _VALUE_FIELD + "|" + _KV_FIELD + ")" + _END + r"){1,4}?" + _TS_AHEAD, "ctx"
    ),
    # a line that starts with two or more fields joined by "|" or ";" without spaces: "1000|web-7|4411|..."
    # (a level or a state word among them is left to the rules that read it)
    HeaderRule(
        "joined_fields",
        r"(?:(?![\[<]?(?:" + _STATE + "|" + _LEVELS_ALL + r")[\]>]?[|;])[^\s|;]{1,64}[|;]){2,}(?=\S)",
        "ctx",
    ),
    # ---- levels ----
    # Python logging default "ERROR:root:message"
    HeaderRule("level_colon_logger", r"(?:" + _LEVELS_UP + r"):[\w.]+:\s*", "tag", final=True),
    HeaderRule("level", r"(?:\[|<)?(?:" + _LEVELS_UP + r")(?:\]|>)?:?" + _AHEAD + _END, "level"),
    # Capitalized and lower-case levels only in brackets, or right after a timestamp
    HeaderRule(
        "level_bracketed", r"[\[<](?:" + _LEVELS_CAP + "|" + _LEVELS_LOW + r")[\]>]:?" + _END, "level"
    ),
    # after a timestamp: a capitalized level, or a lower-case one that a separator ends ("info |")
    HeaderRule(
        "level_cap",
        r"(?:(?:" + _LEVELS_CAP + r"):?" + _AHEAD + r"|(?:" + _LEVELS_LOW + r")(?=\s?[|;,]))" + _END,
        "level",
        after=("ts", "ctx"),
    ),
    # a channel and a level (Monolog): "production.ERROR:", "app.WARNING"
    HeaderRule(
        "channel_level",
        r"[A-Za-z_][\w-]{0,31}\.(?:" + _LEVELS_UP + r"):?" + _AHEAD + _END,
        "level",
        after=("ts",),
        final=True,
    ),
    # the stream of a container runtime log line (CRI): "2024-01-05T09:05:03.1Z stderr F message"
    HeaderRule("cri_stream", r"(?:stdout|stderr)\s[FP]" + _END, "ctx", after=("ts",), final=True),
    # single-letter level (logcat) in front of a "Tag:"
    HeaderRule("level_letter", r"[VDIWEFA](?=\s+[^\s:]+\s*:)" + _END, "level", after=("ts",)),
    # ---- context inside the header ----
    # syslog host + tag: "combo sshd(pam_unix)[19939]:", "host kernel[0]:", "sshd[12]:"
    HeaderRule(
        "syslog_tag_pid",
        r"(?:" + _HOST + r"\s+)?" + _TAG + r"\[\d+\]:?" + _END,
        "tag",
        after=("ts",),
        final=True,
    ),
    # a host directly followed by another timestamp: "dn228 Nov 9 12:01:01 ..."
    HeaderRule(
        "host_before_ts",
        _HOST + r"\s+(?=(?:" + _MON + r"\s+\d{1,2}\s+\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}[-T\s]\d{2}))",
        "ctx",
        after=("ts",),
    ),
    # ids/hosts/upper-case source fields right before a level: "R02-M1-N0 RAS KERNEL INFO ..."
    HeaderRule(
        "fields_before_level",
        r"(?:[A-Z0-9][\w:.@/-]*+\s+){1,3}?(?=(?:" + _LEVELS_UP + r")(?:\s|$))",
        "ctx",
        after=("ts",),
    ),
    # syslog host + tag without pid, only after a syslog-style timestamp: "combo cups: ..."
    HeaderRule(
        "syslog_host_tag", _HOST + r"\s+" + _TAG + r":(?=\s|$)" + _END, "tag", after=("syslog",), final=True
    ),
    # pid / thread id / flag numbers, "1234#0:" (nginx)
    HeaderRule("pid", r"-?\d+(?:#\d+)?:?" + _AHEAD + _END, "ctx", after=("ts", "level")),
    # bracketed thread / context: [main], [pool-1-thread-3], [SendWorker:1:Q@679], [client 1.2.3.4]
    HeaderRule(
        "bracket_ctx", r"\[(?:[^\[\]\n]++|\[[^\[\]\n]*+\])*+\]:?" + _END, "ctx", after=("ts", "level")
    ),
    # pipe-separated header fields: "20171223-22:15:29:606|Step_LSC|30002312|msg"
    HeaderRule("pipe_field", r"\|?(?!" + _STATE + r"\|)[^\s|]{1,64}\|(?=\S)", "ctx", after=("ts",)),
    # "program - message" after a timestamp (program names carry a dot/slash/underscore)
    HeaderRule(
        "program_dash", r"(?=[\w$.@/-]*[._/])[\w$.@/-]++(?:\s+\*?\d{1,3})?\s+-\s+", "ctx", after=("ts",)
    ),
    # logger after a level: "dfs.FSNamesystem:", "WindowManager:", "chatty  :"
    HeaderRule(
        "logger_colon",
        _NOT_A_STATE_TAG + r"[A-Za-z_$][\w$.-]*+\s*:(?=\s|$)" + _END,
        "tag",
        after=("level",),
        final=True,
    ),
    # a program or logger tag right after the other header fields, without a level before it:
    # "2024-01-05 09:05:03 node-7 orbitd: message", "1704413103|4411|billing.Sync: message". Only
    # lower-case program names and dotted or slashed logger names: a capitalized "Word:" there is
    # as often the message's own first word ("Timeout: ...", "ClusterFileSystem: ...").
    HeaderRule(
        "tag_colon",
        _NOT_A_STATE_TAG
        + r"(?=[a-z]|[A-Za-z_$-]{0,63}[./])[A-Za-z_][A-Za-z_.$/-]{0,63}+(?:\([\w:.-]{1,32}\))?:(?=\s|$)"
        + _END,
        "tag",
        after=("ts", "ctx"),
        final=True,
    ),
    # dotted logger without colon, with the request context that usually follows it:
    # "nova.compute.manager [req-... - - -]", "c.e.App : "
    HeaderRule(
        "logger_dotted",
        r"[A-Za-z_][\w$]*+(?:\.[\w$]++)++(?:\s+:)?(?:\s+\[[^\]\n]{0,200}\])?(?=\s|$)" + _END,
        "tag",
        after=("level",),
        final=True,
    ),
    # a value-like field after a timestamp or a level: a host, an address, a pid, a thread name
    # ("node-17", "10.0.0.7", "worker-3"), last: every more specific reading goes first. Right
    # after " - " only when another " - " follows: that dash usually ends the header
    # ("prog - 10.0.0.7:443 open", "[ctx] - 4 peers up"), unless it separates every field
    HeaderRule(
        "value_field",
        r"(?<!\s-\s)" + _VALUE_FIELD + _AHEAD + _END + r"|(?<=\s-\s)" + _VALUE_FIELD + r"(?=\s-\s)" + _END,
        "ctx",
        after=("ts", "level"),
    ),
)

# --------------------------------------------------------------------------- masking
PLACEHOLDERS: Final = (
    "url",
    "email",
    "quoted",
    "uuid",
    "ts",
    "mac",
    "ip",
    "port",
    "host",
    "path",
    "hex",
    "id",
    "duration",
    "size",
    "user",
    "bool",
    "num",
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = _OCTET + r"(?:\." + _OCTET + r"){3}"
_H4 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    r"(?:(?:" + _H4 + r":){7}" + _H4 + r"|(?:" + _H4 + r":){1,7}:(?:" + _H4 + r"(?::" + _H4 + r"){0,6})?"
    r"|::" + _H4 + r"(?::" + _H4 + r"){0,6})"
)
# Host names: the last label must be a generic top-level domain or a two-letter country
# code. A two-label name ending in a code that is far more often a file extension
# ("setup.py", "run.sh") is not taken for a host; three labels and more are.
_GTLD = (
    r"(?:com|net|org|edu|gov|mil|int|info|biz|io|local|localdomain|internal|lan|corp|home|arpa|cloud|dev|app)"
)
_EXT2 = r"(?:py|js|ts|sh|go|rb|so|gz|cc|cs|md|rs|pl|hs|el|ml|db|bz|xz|gw|id|pk)"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = (
    r"(?:(?:" + _LABEL + r"\.){2,}(?:" + _GTLD + r"|[a-z]{2})"
    r"|" + _LABEL + r"\.(?:" + _GTLD + r"|(?!" + _EXT2 + r"\b)[a-z]{2}))"
)
_NOT_A_NAME = (
    r"(?:name|id|ids|is|was|has|had|not|and|or|by|from|to|for|of|on|in|with|at|as|the|a|an|account|agent"
    r"|authentication|auth|data|group|session|request|mode|space|interface|input|login|list|info|error|limit)"
)
# "user locked", "user unknown", "user deregistered": what happened to a user, not a name
_NOT_A_STATE = r"(?!" + _STATE + r"(?![\w.@$-]))"
_UNITS_TIME = r"(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)"
_UNITS_TIME_WORD = (
    r"(?:nanoseconds?|microseconds?|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?)"
)
_UNITS_SIZE = r"(?:[KMGTPE]i?B|[kKMGTP]|kB|bytes?|B)"
_NB = r"(?<![\w.])"  # not inside a word or a dotted run
_NE = r"(?![\w.])"

# Token rules: which one wins where several could match at the same place (earlier wins):
#  url, email           - contain "/", ":", "@", "." and digits that the later kinds would cut up.
#  quoted               - a quoted single token is one value ('orders-eu', "x-1"). Quoted text
#                          WITH spaces is left alone so its words still count ("GET /x HTTP/1.1").
#  uuid                 - before hex and numbers, which would match its parts.
#  datetime, time       - before ip/ipv6 (12:30:01 looks like IPv6 groups) and before numbers.
#  mac, ipv6, ipv4      - before host names (dotted quads look like labels) and numbers; a port
#                          gets its own placeholder, so "ip" and "ip:port" stay distinct.
#  "/" + ip             - before path: "/10.0.0.1" (Java socket address) is an address, not a path.
#  host                 - before numbers ("a-1.example.com").
#  path                 - after url and "/ip", before numbers ("/data/2024/x.log" is one path).
#  k8s_pod              - before hex and numbers, which would cut a pod name's generated parts.
#  hex                  - before numbers (0x10, deadbeef01).
#  duration, size       - before numbers: they swallow the unit (15ms, 64MB).
#  num                  - last: the digits that are left, also inside identifiers
#                          (node-12 -> node-<num>, blk_-42 -> blk_<num>, ssh2 -> ssh<num>).
DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    # ---- text rules (whole message, before tokens) ----
    Rule(
        "escaped_quoted",
        r"\\(?:\"|042)(?!" + _STATE + r"\\(?:\"|042))(?:(?!\\(?:\"|042)).){0,200}?\\(?:\"|042)",
        "<quoted>",
        scope="text",
        hint=("\\",),
    ),
    # "version 1.2.3.4" / "version: 2.0" are versions, not addresses or dates
    Rule(
        "version",
        r"(\b(?:[Vv]ersion|VERSION|ver)[:=]?\s?)\d+(?:\.\d+)+\b",
        r"\1<num>",
        scope="text",
        hint=("ver",),
    ),
    # user names are values: "user alice", "for user bob", "invalid user admin", "user=root",
    # "Failed password for root from ...". The key stays, so "user=<user>" present vs absent
    # still differs; the words that follow "user" in prose ("user authentication") are kept.
    Rule(
        "user",
        r"(?<![\w=])([Uu]ser(?:name)?|USER)\s+(?!<)(?!" + _NOT_A_NAME + r"\b)" + _NOT_A_STATE + r"[\w.@$-]+",
        r"\1 <user>",
        scope="text",
        hint=("user",),
    ),
    Rule(
        "user_kv",
        r"\b((?:r?user|username|uname|login|account|acct)=)(?!<)[A-Za-z_][\w.@$-]*",
        r"\1<user>",
        scope="text",
        hint=("ser=", "name=", "login=", "account=", "acct="),
    ),
    Rule(
        "user_for_from",
        r"\bfor (?!(?:invalid|illegal|unknown|user|the|a|an|all|any|each|every|no)\b)"
        r"(?!<)[\w.@$-]+(?= from\b)",
        "for <user>",
        scope="text",
        hint=(" from",),
    ),
    # true/false/null as the value of a key ("allDrawn= false", "ws=null", "enabled: true")
    Rule(
        "bool",
        r"((?:=|:)\s?)(?:true|false|null|nil|none|True|False|None|NULL|TRUE|FALSE)\b",
        r"\1<bool>",
        scope="text",
        hint=("true", "false", "null", "nil", "none"),
    ),
    # ---- token rules (one alternation, earlier wins at the same place) ----
    Rule("url", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s\"'<>()\[\]{}]+", "<url>", hint=("://",)),
    Rule(
        "email",
        r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])",
        "<email>",
        hint=("@",),
    ),
    Rule(
        "quoted",
        r"(?<![\w\"'])(?![\"']" + _STATE + r"\\?[\"'])(?:\"[^\"\s]{1,200}\"|'[^'\s]{1,200}')(?![\w\"'])",
        "<quoted>",
        hint=('"', "'"),
    ),
    Rule(
        "uuid",
        r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])",
        "<uuid>",
        hint=("-",),
    ),
    # dates, with a time joined by T, "_", ":" or "-": 2024-01-02, 2024-01-02T03:04:05Z, 2016/9/27:20:30:31
    Rule(
        "datetime",
        _NB + r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T_:-]" + _TIME + r"(?:Z|[+-]\d{2}:?\d{2})?)?"
        r"|\d{1,2}[/.]\d{1,2}[/.]\d{4})(?!\d|\.\d)",
        "<ts>",
        hint=("-", "/", "."),
    ),
    Rule("time", r"(?<![\d:.])\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?![\d:])", "<ts>", hint=(":",)),
    Rule("mac", r"(?<![\w:])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![\w:])", "<mac>", hint=(":", "-")),
    # bracketed IPv6 with port "[::1]:8080", IPv6 (with "::" or all eight groups), with ":port"
    Rule("ipv6_port", r"\[" + _IPV6 + r"\]:\d{1,5}\b", "<ip>:<port>", hint=("]:",)),
    Rule("ipv6", r"(?<![\w:.])" + _IPV6 + r"(?![\w:.])", "<ip>", hint=(":",)),
    Rule("ipv6_with_port", r"(?<![\w:.])" + _IPV6 + r":\d{1,5}(?![\w:.])", "<ip>:<port>", hint=(":",)),
    Rule("slash_ipv4_port", r"(?<![\w.])/" + _IPV4 + r":\d{1,5}" + _NE, "/<ip>:<port>", hint=("/",)),
    Rule("slash_ipv4", r"(?<![\w.])/" + _IPV4 + _NE, "/<ip>", hint=("/",)),
    Rule("ipv4_port", _NB + _IPV4 + r":\d{1,5}" + _NE, "<ip>:<port>", hint=(".",)),
    Rule("ipv4", _NB + _IPV4 + r"(?:/\d{1,2})?" + _NE, "<ip>", hint=(".",)),
    Rule("host_port", r"(?<![\w.@/-])" + _HOSTNAME + r":\d{1,5}(?![\w.-])", "<host>:<port>", hint=(".",)),
    Rule("host", r"(?<![\w.@/-])" + _HOSTNAME + r"\.?(?![\w-]|\.\w)", "<host>", hint=(".",)),
    Rule("win_path", r"(?<!\w)[A-Za-z]:\\[^\s\"'<>|]*", "<path>", hint=(":\\",)),
    # unix paths: "/a/b", "/a", "./x/y", "~/x"; not "and/or" or "1/2" (a word char before the slash)
    Rule("path", r"(?<![\w/<>.~])(?:\.{1,2}|~)?(?:/[\w.@%+~:=-]+)+/?", "<path>", hint=("/",)),
    # generated Kubernetes pod names, <deployment>-<replicaset hash>-<5 chars>: "api-7d4b9c8f6-xkq7z"
    # -> "api-<id>" (one slot: every pod of the deployment is the same source). A digit in the
    # two generated parts tells them from hyphenated words ("x-forwarded-proto").
    Rule(
        "k8s_pod",
        r"(?<=[A-Za-z0-9])-(?=[a-z0-9]{0,9}[0-9]|[a-z0-9]{5,10}-[a-z0-9]{0,4}[0-9])"
        r"[a-z0-9]{5,10}-[a-z0-9]{5}(?![\w-])",
        "-<id>",
        hint=(DIGIT,),
    ),
    Rule("hex_prefixed", r"\b0[xX][0-9A-Fa-f]+\b", "<hex>", hint=("0x", "0X")),
    # hex strings (hashes, object ids, identity hash codes): 6+ hex digits with at least one
    # digit and one letter a-f; all-digit strings are left to <num>
    Rule(
        "hex_long",
        r"(?<!\w)(?=[0-9A-Fa-f]*\d)(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{6,}(?!\w)",
        "<hex>",
        hint=(DIGIT,),
    ),
    Rule(
        "duration_compound",
        r"(?<![\w.])(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|µs|ns)){2,}(?!\w)",
        "<duration>",
        hint=(DIGIT,),
    ),
    Rule("duration", _NB + r"\d+(?:\.\d+)?" + _UNITS_TIME + r"\b", "<duration>", hint=(DIGIT,)),
    Rule("size", _NB + r"\d+(?:\.\d+)?" + _UNITS_SIZE + r"\b", "<size>", hint=(DIGIT,)),
    # numbers; a "-" is a sign only after a separator ("blk_-42", "x=-1", "-5"), not in "node-12"
    Rule("num", r"(?:(?<![^\s=(\[:,_])-)?(?<![0-9])\d+(?:[.,]\d+)*(?![0-9])", "<num>", hint=(DIGIT,)),
    # ---- template rules (after the token pass) ----
    # a date and a time written with spaces: "Fri Jun 17 07:07:00 2005", "Jun 17 07:07:00"
    Rule(
        "spaced_datetime",
        r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? )?"
        r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
        r" <num>,? (?:<num> )?<ts>(?: (?:Z|UTC|GMT))?(?: <num>)?",
        "<ts>",
        scope="template",
        hint=("<ts>",),
    ),
    # a number and a unit written apart: "5 seconds", "1.2 GiB", "4096 bytes"
    Rule(
        "spaced_duration",
        r"<num> " + _UNITS_TIME_WORD + r"\b",
        "<duration>",
        scope="template",
        hint=("<num> ",),
    ),
    Rule(
        "spaced_size",
        r"<num> (?:[KMGTPE]i?B|kB|bytes?)\b",
        "<size>",
        scope="template",
        hint=("<num> ",),
    ),
    # lists of one kind of value ("<num> <num> <num>", "[<ip>, <ip>]") are one value; runs of the
    # same token holding a placeholder ("@<hex> @<hex>") are collapsed by the token pass itself
    Rule(
        "collapse_lists",
        r"<([a-z]+)>(?:[ ,;]+<\1>)+",
        r"<\1>",
        scope="template",
        hint=("> <", ">, <", ">,<", ">; <"),
    ),
)

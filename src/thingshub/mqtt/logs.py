"""Loggers whose lines clients cannot forge.

Rules:
- Client ids, user names and topics are chosen by clients; a newline or a
  terminal escape in one would forge or hide log lines. Every logger that
  may carry them (the MQTT server's, the gateway's) comes from `logger()`,
  whose filter escapes the finished message of every record: one place, so
  no log call can forget it.
- Escaping: a character that is not printable (`str.isprintable`: control
  characters, line and paragraph separators, ...) becomes its Python
  escape (`\\n`, `\\x1b`, `\\u2028`), and a backslash becomes `\\\\` so that an
  escape in the log always means one was made. Printable text is left as is.
- Only records that are emitted pay: a message already printable is left
  untouched (template and arguments), nothing is formatted twice.
- Tracebacks (`log.exception`) are multi-line by nature and left alone.
"""

from __future__ import annotations

import logging


def printable(text: str) -> str:
    """`text` with every non-printable character and backslash escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


class PrintableFilter(logging.Filter):
    """Rewrites a record whose message holds anything `printable` would escape."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad template: let logging report it as it does
            return True
        safe = printable(message)
        if safe is not message:
            record.msg = safe
            record.args = None
        return True


_FILTER = PrintableFilter()


def logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the escaping filter attached (once)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log

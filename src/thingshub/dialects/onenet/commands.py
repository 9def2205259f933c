"""OneNET's synchronous commands: `cmd/request/{cmd_id}` out, `cmd/response/{cmd_id}` back.

Rules:
- The command's body is the application's bytes, untouched; so is the answer.
- An answer is judged (core/commands.py's verdict) and the verdict told to
  the device: an empty `cmd/response/{cmd_id}/accepted`, or
  `.../rejected` with {"err_code", "err_msg"}: an unknown id, or one already
  answered → 113 "CMD id not found"; answered after its timeout → 112 "CMD
  response timeout"; 1024 bytes or more → 99 "maximum payload size
  exceeded". 100 "internal error" is for platform failures.
"""

from __future__ import annotations

from typing import Final

from thingshub.core import commands
from thingshub.core.commands import AnswerLimit

ERR_TOO_LARGE: Final = 99
ERR_INTERNAL: Final = 100
ERR_TIMEOUT: Final = 112
ERR_NOT_FOUND: Final = 113
ERR_MSG: Final = {
    ERR_TOO_LARGE: "maximum payload size exceeded",
    ERR_INTERNAL: "internal error",
    ERR_TIMEOUT: "CMD response timeout",
    ERR_NOT_FOUND: "CMD id not found",
}

#: Answers of 1024 bytes or more are refused.
LIMIT: Final = AnswerLimit(1023, ERR_TOO_LARGE, ERR_MSG[ERR_TOO_LARGE])

#: The code each verdict but ACCEPTED is rejected with.
REJECTIONS: Final = {
    commands.UNKNOWN: ERR_NOT_FOUND,
    commands.LATE: ERR_TIMEOUT,
    commands.TOO_LARGE: ERR_TOO_LARGE,
}

"""`python -m tests.support.home_holder LOCK_FILE`: takes the home's lock it was handed, as `ct run`
does, says so in a file beside the lock (`child-holds`: its pid, written whole), and keeps it."""

import os
import sys
import time
from pathlib import Path

from pipelines.home_lock import HomeLock

if __name__ == "__main__":
    lock_file = Path(sys.argv[1])
    HomeLock(lock_file, "ct run").acquire("run-child")
    said = lock_file.with_name("child-holds.writing")
    said.write_text(str(os.getpid()))
    os.replace(said, lock_file.with_name("child-holds"))
    time.sleep(120)

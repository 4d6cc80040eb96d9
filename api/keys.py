"""Optional API keys: which keys are accepted, and a command to make one.

Off unless the operator sets API_KEYS or API_KEYS_SECRET_ARN (the course contract has no
authentication). On, the writes and the job endpoints need ``Authorization: Bearer <key>``
(api.access decides which requests).

Only hashes are kept (``name:sha256hex`` entries): a leaked configuration or secret gives
no key away. A plain SHA-256 is the right hash here, not a slow password hash: a key is 256
random bits, which no amount of guessing per hash can find, and every request hashes one.

Keys from a secret are read again every API_KEYS_REFRESH_S by a thread of their own, so a
rotation needs no restart: add the new key's entry (both keys work), move the clients to
it, remove the old entry (ops/README.md). A failed read keeps the keys last read.

    python -m api.keys new NAME     # a new key, and the entry to add for it
    python -m api.keys hash NAME    # the entry of a key read from standard input
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading

import structlog

from models.credentials import read_secret_string
from models.settings import AccessSettings, ConfigError, parse_api_key_hashes

log = structlog.get_logger("api")

#: Made keys start with this, so a key pasted where it should not be is easy to spot.
KEY_PREFIX = "tok_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The accepted keys (their hashes, by name); safe to read from any thread."""

    def __init__(self, access: AccessSettings) -> None:
        self._arn = access.api_keys_secret_arn
        self._refresh_s = access.api_keys_refresh_s
        self._hashes: dict[str, str] | None = None
        if self._arn is None and access.api_keys is not None:
            self._hashes = parse_api_key_hashes(access.api_keys, "API_KEYS")
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        """False until the secret has been read once (requests needing a key get 503)."""
        return self._hashes is not None

    def name_of(self, key: str) -> str | None:
        """The name of ``key`` if it is accepted, else None."""
        hashes = self._hashes
        return None if hashes is None else hashes.get(key_hash(key))

    def start(self) -> None:
        """Read the secret now and then every API_KEYS_REFRESH_S, on a daemon thread."""
        if self._arn is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._refresh, name="api-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _refresh(self) -> None:
        arn = self._arn
        if arn is None:
            return
        while True:
            try:
                hashes = parse_api_key_hashes(read_secret_string(arn), "API_KEYS_SECRET_ARN")
            except Exception as exc:  # keep serving with the keys last read
                log.warning("API keys could not be read", error=type(exc).__name__)
                wait = 1.0 if self._hashes is None else self._refresh_s  # keys needed: sooner
            else:
                if hashes != self._hashes:
                    log.info("API keys loaded", names=sorted(set(hashes.values())))
                self._hashes = hashes
                wait = self._refresh_s
            if self._stopped.wait(wait):
                return


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def main(argv: list[str]) -> int:
    usage = "usage: python -m api.keys new NAME | python -m api.keys hash NAME  (key on stdin)"
    if len(argv) != 2 or argv[0] not in ("new", "hash"):
        print(usage, file=sys.stderr)
        return 2
    command, name = argv
    try:
        parse_api_key_hashes(f"{name}:{'0' * 64}", "NAME")
    except ConfigError:
        print("NAME: letters, digits, '.', '_' or '-', at most 64", file=sys.stderr)
        return 2
    if command == "new":
        key = new_key()
        print(f"key:   {key}")
        print("entry: ", end="")
    else:
        key = sys.stdin.readline().strip()
        if not key:
            print("no key on standard input", file=sys.stderr)
            return 2
    print(f"{name}:{key_hash(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

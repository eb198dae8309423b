"""`strom configs --entity-type users`: SCRAM credentials, as kafka-configs manages them,
through DescribeUserScramCredentials and AlterUserScramCredentials.

    --add-config 'SCRAM-SHA-256=[iterations=8192,password=alice-secret]'
    --delete-config SCRAM-SHA-512

The password never reaches the broker: the salted password is computed here (the broker
stores StoredKey and ServerKey, as Kafka)."""

from __future__ import annotations

import re

from strom.cli._common import ToolError

TIMEOUT = 30.0
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_ITERATIONS = 4096


def is_scram(key: str) -> bool:
    return key.upper() in MECHANISMS


def _mechanism(name: str):
    from confluent_kafka.admin import ScramMechanism

    return ScramMechanism.SCRAM_SHA_256 if name.upper() == "SCRAM-SHA-256" \
        else ScramMechanism.SCRAM_SHA_512


def parse_scram_value(key: str, value: str) -> tuple[int, str]:
    """'iterations=8192,password=secret' -> (8192, 'secret'); the password may hold ','."""
    m = re.fullmatch(r"(?:iterations=(\d+),)?password=(.*)|password=(.*?),iterations=(\d+)",
                     value.strip(), re.S)
    if m is None:
        raise ToolError(f"Invalid {key} value: expected [iterations=N,]password=...")
    if m.group(2) is not None:
        return int(m.group(1) or DEFAULT_ITERATIONS), m.group(2)
    return int(m.group(4)), m.group(3)


def describe(admin, name: str | None) -> int:
    from confluent_kafka import KafkaException

    try:
        if name is None:
            described = admin.describe_user_scram_credentials(
                request_timeout=TIMEOUT).result(timeout=TIMEOUT)
        else:
            futures = admin.describe_user_scram_credentials([name], request_timeout=TIMEOUT)
            described = {user: f.result(timeout=TIMEOUT) for user, f in futures.items()}
    except KafkaException as e:
        if "RESOURCE_NOT_FOUND" in str(e) or "does not exist" in str(e):
            print(f"SCRAM credential configs for user-principal '{name}' are ")
            return 0
        raise
    for user in sorted(described):
        infos = ", ".join(f"{i.mechanism.name.replace('_', '-')}=iterations={i.iterations}"
                          for i in described[user].scram_credential_infos)
        print(f"SCRAM credential configs for user-principal '{user}' are {infos}")
    return 0


def alter(admin, name: str, added: dict[str, str], deleted: list[str]) -> int:
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    other = [k for k in [*added, *deleted] if not is_scram(k)]
    if other:
        raise ToolError(f"Invalid config(s) for users: {','.join(other)} (SCRAM-SHA-256 "
                        "and SCRAM-SHA-512 credentials are served)")
    alterations: list = []
    for key, value in added.items():
        iterations, password = parse_scram_value(key, value)
        alterations.append(UserScramCredentialUpsertion(
            name, ScramCredentialInfo(_mechanism(key), iterations), password.encode()))
    alterations += [UserScramCredentialDeletion(name, _mechanism(k)) for k in deleted]
    futures = admin.alter_user_scram_credentials(alterations, request_timeout=TIMEOUT)
    for future in futures.values():
        future.result(timeout=TIMEOUT)
    print(f"Completed updating config for user {name}.")
    return 0

"""Names of the named actors, so every process finds the same ones."""

SUPERVISOR = "imray-supervisor"
PRESENCE = "imray-presence"


def shard(index: int) -> str:
    return f"imray-shard-{index}"


def owner_of(conv: str, shard_count: int) -> str:
    """The name of the ConversationShard that owns `conv`."""
    from imray.domain.conversations import shard_of

    return shard(shard_of(conv, shard_count))


def socket_node(node_id: str) -> str:
    return f"imray-socket-{node_id}"

"""Names of the named actors, so every process finds the same ones."""

SUPERVISOR = "imray-supervisor"
PRESENCE = "imray-presence"


def shard(index: int) -> str:
    return f"imray-shard-{index}"


def socket_node(node_id: str) -> str:
    return f"imray-socket-{node_id}"

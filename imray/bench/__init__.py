"""`imray bench`: load generators that speak the wire contract, a bare relay baseline, an audit."""

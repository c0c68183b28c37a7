"""The collector's HTTP interface: agent API, review API, operations endpoints."""

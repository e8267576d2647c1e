"""One module per /v1 route family, each a handler of (GatewayState, Exchange)."""

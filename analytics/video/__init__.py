"""Video analytics: pure functions of pictures and time (no sockets, no clients)."""

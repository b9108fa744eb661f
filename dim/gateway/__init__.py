"""The HTTP gateway: accounts, tokens, and which node a client connects to."""

"""The ground floor under every domain app: persistence helpers, audit, roles and the one
permission check, delivery to peers with retry, the TCP server, TLS, errors. It imports no
domain app and not the project package."""

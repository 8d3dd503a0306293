"""The local stack's servers: gRPC (serve), the REST gateway, the shared HTTP server, TLS and the guard that
checks Host, Origin and the token. Server-side only: nothing in the client layers imports from here."""

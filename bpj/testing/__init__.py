"""Test helpers for code that uses bpj.

``bpj.testing.strategies`` holds hypothesis strategies for every bpj message (and any other protobuf
message) and for valid resource names. Importing this package costs nothing: hypothesis is imported
only by ``bpj.testing.strategies`` itself.
"""
